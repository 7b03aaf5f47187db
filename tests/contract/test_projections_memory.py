"""The projection contract on the in-memory storage."""

from typing import Any

import pytest

from eventfold.testing.contracts.projections import (
    DocumentReadModelContract,
    InlineProjectionContract,
    ProjectionContract,
)


class TestMemoryProjections(
    ProjectionContract, DocumentReadModelContract, InlineProjectionContract
):
    @pytest.fixture
    def storage(self, memory_storage: Any) -> Any:
        return memory_storage
