"""The process manager contract on the memory storage."""

from typing import Any

import pytest

from eventfold.testing.contracts.processes import ProcessManagerContract


class TestMemoryProcesses(ProcessManagerContract):
    @pytest.fixture
    def storage(self, memory_storage: Any) -> Any:
        return memory_storage
