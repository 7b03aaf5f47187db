"""The process manager contract on the postgres storage."""

from typing import Any

import pytest

from eventfold.testing.contracts.processes import ProcessManagerContract


class TestPostgresProcesses(ProcessManagerContract):
    @pytest.fixture
    def storage(self, postgres_storage: Any) -> Any:
        return postgres_storage
