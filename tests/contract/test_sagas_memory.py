"""The saga contract on the memory storage."""

from typing import Any

import pytest

from eventfold.testing.contracts.sagas import SagaContract


class TestMemorySagas(SagaContract):
    @pytest.fixture
    def storage(self, memory_storage: Any) -> Any:
        return memory_storage
