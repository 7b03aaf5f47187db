"""The Redis backend: a cache and (with the broker extra) streams."""

from eventfold.adapters.redis.cache import RedisCache, create_redis_cache
from eventfold.adapters.redis.streams import (
    RedisStreamsBroker,
    RedisStreamsSubscription,
    create_redis_streams_broker,
)

__all__ = [
    "RedisCache",
    "RedisStreamsBroker",
    "RedisStreamsSubscription",
    "create_redis_cache",
    "create_redis_streams_broker",
]
