"""Contract test suites: subclass one in a test module and provide its ``storage`` fixture."""

from eventfold.testing.contracts.forgetting import ForgettingContract
from eventfold.testing.contracts.outbox import OutboxRelayContract
from eventfold.testing.contracts.persistence import PersistenceContract, SqlTableContract
from eventfold.testing.contracts.sagas import SagaContract
from eventfold.testing.contracts.storage import StorageContract
from eventfold.testing.contracts.values import DocumentValuesContract, StorableValuesContract

__all__ = [
    "DocumentValuesContract",
    "ForgettingContract",
    "OutboxRelayContract",
    "PersistenceContract",
    "SagaContract",
    "SqlTableContract",
    "StorableValuesContract",
    "StorageContract",
]
