"""The in-memory backend: a real adapter for tests, prototypes and single-process tools."""

from eventfold.adapters.memory.broker import MemoryBroker, create_memory_broker
from eventfold.adapters.memory.cache import MemoryCache, create_memory_cache
from eventfold.adapters.memory.outbox import MemoryOutboxStore, create_memory_outbox_store
from eventfold.adapters.memory.storage import MemorySession, MemoryStorage, create_memory_storage

__all__ = [
    "MemoryBroker",
    "MemoryCache",
    "MemoryOutboxStore",
    "MemorySession",
    "MemoryStorage",
    "create_memory_broker",
    "create_memory_cache",
    "create_memory_outbox_store",
    "create_memory_storage",
]
