"""The saga contract on the postgres storage."""

from typing import Any

import pytest

from eventfold.testing.contracts.sagas import SagaContract


class TestPostgresSagas(SagaContract):
    @pytest.fixture
    def storage(self, postgres_storage: Any) -> Any:
        return postgres_storage
