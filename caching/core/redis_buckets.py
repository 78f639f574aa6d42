"""The shared token buckets of the rate limits, on Redis: one script call per lease, one slot per key."""

from __future__ import annotations

from caching.core.cluster import RedisClient
from caching.core.keys import KeySpace
from caching.core.ratelimit import Lease, Rate
from caching.core.redis_scripts import LEASE_SCRIPT
from caching.core.store import REDIS_FAILURES, CacheUnavailable


class RedisTokenBuckets:
    """Token buckets under the installation's key prefix (:meth:`KeySpace.rate_bucket`)."""

    def __init__(self, client: RedisClient, keyspace: KeySpace) -> None:
        self.keyspace = keyspace
        self._lease_script = client.register_script(LEASE_SCRIPT)

    def lease(self, name: str, rate: Rate, want: int) -> Lease:
        try:
            granted, wait_ms = self._lease_script(
                keys=[self.keyspace.rate_bucket(name)],
                args=[rate.count, rate.period_seconds * 1000, want],
            )
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc
        return Lease(int(granted), int(wait_ms) / 1000)
