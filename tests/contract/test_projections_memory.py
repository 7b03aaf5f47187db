"""The projection contract on the in-memory storage."""

from typing import Any

import pytest

from eventfold.testing.contracts.projections import ProjectionContract


class TestMemoryProjections(ProjectionContract):
    @pytest.fixture
    def storage(self, memory_storage: Any) -> Any:
        return memory_storage
