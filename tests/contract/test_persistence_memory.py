"""The persistence contract on the in-memory backend."""

from __future__ import annotations

from typing import Any

import pytest

from eventfold.adapters.memory import create_memory_storage
from eventfold.testing.contracts.persistence import PersistenceContract


class TestMemoryPersistence(PersistenceContract):
    @pytest.fixture
    def storage(self, memory_storage: Any) -> Any:
        return memory_storage

    @pytest.fixture
    def second_storage(self) -> Any:
        return create_memory_storage(name="memory-2")
