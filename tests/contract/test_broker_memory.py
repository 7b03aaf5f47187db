"""The broker contract on the in-process broker."""

from __future__ import annotations

import pytest

from eventfold.adapters.memory.broker import MemoryBroker, create_memory_broker
from eventfold.testing.contracts.broker import BrokerContract


class TestMemoryBroker(BrokerContract):
    @pytest.fixture
    def broker(self, memory_broker: MemoryBroker) -> MemoryBroker:
        return memory_broker  # the pytest plugin's in-process broker

    @pytest.fixture
    async def unreachable_broker(self) -> MemoryBroker:
        # An in-process broker is unreachable only once it has been closed.
        broker = create_memory_broker()
        await broker.close()
        return broker
