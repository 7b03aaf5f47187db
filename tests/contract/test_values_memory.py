"""The values contract on the in-memory backend."""

from __future__ import annotations

from typing import Any

import pytest

from eventfold.testing.contracts.values import DocumentValuesContract, StorableValuesContract


class TestMemoryValues(StorableValuesContract, DocumentValuesContract):
    @pytest.fixture
    def storage(self, memory_storage: Any) -> Any:
        return memory_storage
