"""Per-model counters kept in process and flushed to Redis off the request path."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from typing import cast

import redis

from caching.core.keys import KeySpace
from caching.core.store import REDIS_FAILURES, CacheUnavailable

STAT_FIELDS = (
    "requests",
    "hits",
    "misses",
    "bypassed",
    "backend_calls",
    "backend_instances",
    "backend_answered",  # instances of the backend calls that succeeded
    "backend_us",  # time those calls took, in microseconds
    "decode_errors",
    "store_errors",
    "not_stored",
    "not_admitted",
    "too_large",
    "version_changes",
    "stale_if_error",
    "revalidations",
    "single_flight_waits",
    "single_flight_timeouts",
    "breaker_rejections",
)


class StatsRecorder:
    """Thread-safe counters per model namespace; :meth:`flush` adds them to Redis hashes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def record(self, namespace: str, **counts: int) -> None:
        with self._lock:
            self._pending[namespace].update(counts)

    def pending(self, namespace: str) -> dict[str, int]:
        """Counts recorded in this process and not yet flushed to Redis."""
        with self._lock:
            return dict(self._pending.get(namespace, {}))

    def flush(self, client: redis.Redis, keyspace: KeySpace) -> bool:
        """Add pending counts to Redis; on failure keep them for the next flush."""
        with self._lock:
            pending, self._pending = self._pending, defaultdict(Counter)
        if not pending:
            return True
        pipe = client.pipeline(transaction=False)
        for namespace, counts in pending.items():
            for field, amount in counts.items():
                if amount:
                    pipe.hincrby(keyspace.stats(namespace), field, amount)
        try:
            pipe.execute()
        except REDIS_FAILURES:
            with self._lock:
                for namespace, counts in pending.items():
                    self._pending[namespace].update(counts)
            return False
        return True


def read_stats(client: redis.Redis, keyspace: KeySpace, namespace: str) -> dict[str, int]:
    """The flushed counters of one model namespace (zeros where nothing was counted)."""
    try:
        stored = cast(dict[bytes, bytes], client.hgetall(keyspace.stats(namespace)))
    except REDIS_FAILURES as exc:
        raise CacheUnavailable(str(exc)) from exc
    totals = {field: 0 for field in STAT_FIELDS}
    for field, value in stored.items():
        totals[field.decode()] = int(value)
    return totals
