"""The saga contract on the sqlite storage."""

from typing import Any

import pytest

from eventfold.testing.contracts.sagas import SagaContract


class TestSqliteSagas(SagaContract):
    @pytest.fixture
    def storage(self, sqlite_storage: Any) -> Any:
        return sqlite_storage
