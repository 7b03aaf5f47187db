"""The scheduled-messages contract on the sqlite storage."""

from typing import Any

import pytest

from eventfold.testing.contracts.scheduling import ScheduleStoreContract


class TestSqliteSchedules(ScheduleStoreContract):
    @pytest.fixture
    def storage(self, sqlite_storage: Any) -> Any:
        return sqlite_storage
