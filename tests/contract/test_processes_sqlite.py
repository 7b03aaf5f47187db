"""The process manager contract on the sqlite storage."""

from typing import Any

import pytest

from eventfold.testing.contracts.processes import ProcessManagerContract


class TestSqliteProcesses(ProcessManagerContract):
    @pytest.fixture
    def storage(self, sqlite_storage: Any) -> Any:
        return sqlite_storage
