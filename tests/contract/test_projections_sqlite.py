"""The projection contract on the sqlite storage."""

from typing import Any

import pytest

from eventfold.testing.contracts.projections import (
    DocumentReadModelContract,
    InlineProjectionContract,
    ProjectionContract,
)


class TestSqliteProjections(
    ProjectionContract, DocumentReadModelContract, InlineProjectionContract
):
    @pytest.fixture
    def storage(self, sqlite_storage: Any) -> Any:
        return sqlite_storage
