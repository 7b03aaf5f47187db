"""The projection contract on the postgres storage."""

from typing import Any

import pytest

from eventfold.testing.contracts.projections import (
    DocumentReadModelContract,
    InlineProjectionContract,
    ProjectionContract,
)


class TestPostgresProjections(
    ProjectionContract, DocumentReadModelContract, InlineProjectionContract
):
    @pytest.fixture
    def storage(self, postgres_storage: Any) -> Any:
        return postgres_storage
