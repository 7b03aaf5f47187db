"""The storage contract on SQLite."""

from __future__ import annotations

from typing import Any

import pytest

from eventfold.testing.contracts.storage import StorageContract


class TestSqliteStorage(StorageContract):
    @pytest.fixture
    def storage(self, sqlite_storage: Any) -> Any:
        return sqlite_storage
