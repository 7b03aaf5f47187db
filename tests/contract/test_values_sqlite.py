"""The values contract on Sqlite."""

from __future__ import annotations

from typing import Any

import pytest

from eventfold.testing.contracts.values import DocumentValuesContract, StorableValuesContract


class TestSqliteValues(StorableValuesContract, DocumentValuesContract):
    @pytest.fixture
    def storage(self, sqlite_storage: Any) -> Any:
        return sqlite_storage
