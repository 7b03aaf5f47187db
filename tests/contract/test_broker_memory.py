"""The broker contract on the in-process broker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventfold.adapters.memory.broker import MemoryBroker, create_memory_broker
from eventfold.testing.contracts.broker import BrokerContract


class TestMemoryBroker(BrokerContract):
    @pytest.fixture
    async def broker(self) -> AsyncIterator[MemoryBroker]:
        broker = create_memory_broker()
        yield broker
        await broker.close()

    @pytest.fixture
    async def unreachable_broker(self) -> MemoryBroker:
        # An in-process broker is unreachable only once it has been closed.
        broker = create_memory_broker()
        await broker.close()
        return broker
