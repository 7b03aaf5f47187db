"""The values contract on PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from eventfold.testing.contracts.values import DocumentValuesContract, StorableValuesContract

pytestmark = pytest.mark.postgres


class TestPostgresValues(StorableValuesContract, DocumentValuesContract):
    @pytest.fixture
    def storage(self, postgres_storage: Any) -> Any:
        return postgres_storage
