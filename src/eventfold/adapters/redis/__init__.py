"""The Redis backend: a cache and (with the broker extra) streams."""

from eventfold.adapters.redis.cache import RedisCache, create_redis_cache

__all__ = ["RedisCache", "create_redis_cache"]
