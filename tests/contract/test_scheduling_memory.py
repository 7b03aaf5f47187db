"""The scheduled-messages contract on the memory storage."""

from typing import Any

import pytest

from eventfold.testing.contracts.scheduling import ScheduleStoreContract


class TestMemorySchedules(ScheduleStoreContract):
    @pytest.fixture
    def storage(self, memory_storage: Any) -> Any:
        return memory_storage
