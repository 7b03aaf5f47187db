"""The storage contract on PostgreSQL (asyncpg), each test in a schema of its own."""

from __future__ import annotations

from typing import Any

import pytest

from eventfold.testing.contracts import StorageContract

pytestmark = pytest.mark.postgres


class TestPostgresStorage(StorageContract):
    @pytest.fixture
    def storage(self, postgres_storage: Any) -> Any:
        return postgres_storage
