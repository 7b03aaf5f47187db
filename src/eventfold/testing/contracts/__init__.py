"""Contract test suites: subclass one in a test module and provide its ``storage`` fixture."""

from eventfold.testing.contracts.outbox import OutboxRelayContract
from eventfold.testing.contracts.storage import StorageContract

__all__ = ["OutboxRelayContract", "StorageContract"]
