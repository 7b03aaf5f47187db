"""The storage contract on the in-memory backend."""

from __future__ import annotations

from typing import Any

import pytest

from eventfold.testing.contracts import StorageContract


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    def storage(self, memory_storage: Any) -> Any:
        return memory_storage
