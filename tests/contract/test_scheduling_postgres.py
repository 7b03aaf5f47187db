"""The scheduled-messages contract on the postgres storage."""

from typing import Any

import pytest

from eventfold.testing.contracts.scheduling import ScheduleStoreContract


class TestPostgresSchedules(ScheduleStoreContract):
    @pytest.fixture
    def storage(self, postgres_storage: Any) -> Any:
        return postgres_storage
