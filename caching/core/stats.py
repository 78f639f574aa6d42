"""Per-model counters kept in process and flushed to Redis off the request path."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from caching.core.cluster import RedisClient, RedisPipeline
from caching.core.keys import KeySpace
from caching.core.store import REDIS_FAILURES, CacheUnavailable
from caching.core.timeline import minute_of, queue_minute_counts

STAT_FIELDS = (
    "requests",
    "hits",
    "misses",
    "cached_requests",  # client requests answered from the cache alone (X-Cache HIT or STALE)
    "cached_us",  # time the read-through took answering those, in microseconds
    "computed_requests",  # client requests that called the model (MISS or PARTIAL)
    "computed_us",  # time the read-through took answering those, in microseconds
    "bypassed",
    "backend_calls",
    "backend_instances",
    "backend_answered",  # instances of the backend calls that succeeded
    "backend_us",  # time those calls took, in microseconds
    "decode_errors",
    "integrity_failures",  # values whose HMAC tag did not verify (PREDCACHE_VALUE_HMAC_KEY)
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
    "l1_hits",  # of the hits, answered by the in-process tier with no Redis command
    "hot_samples",  # fresh hits sampled for the hot set (refresh-ahead)
    "refresh_runs",
    "refresh_hot",  # hot entries a refresh-ahead run found cached and requested since written
    "refreshed",  # of those, recomputed ahead of their expiry
    "refresh_not_due",  # of those, not yet within their lead of expiry (or left for the next run)
    "refresh_errors",  # of those, the model failed to recompute
    "refresh_cold",  # hot-set entries not requested since written: left to expire
    "refresh_gone",  # hot-set entries no longer fresh in the cache (expired, purged, evicted)
)


class PendingWrites(Protocol):
    """Other per-process work for Redis that rides in the stats flush's pipeline."""

    def write_pending(self, pipe: RedisPipeline, keyspace: KeySpace) -> int:
        """Queue the pending commands on ``pipe``; returns how many were queued."""
        ...


class StatsRecorder:
    """Thread-safe counters per model namespace; :meth:`flush` adds them to Redis hashes.

    With ``minutes_kept_seconds`` the flush also adds them to per-minute hashes kept that long
    (:mod:`caching.core.timeline`, the dashboard's charts).
    """

    def __init__(
        self,
        alongside: Sequence[PendingWrites] = (),
        *,
        minutes_kept_seconds: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self._pending: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._alongside = tuple(alongside)  # flushed in the same pipeline (hot-key samples)
        self._minutes_kept_seconds = minutes_kept_seconds
        self._clock = clock

    def record(self, namespace: str, **counts: int) -> None:
        with self._lock:
            self._pending[namespace].update(counts)

    def record_request(
        self,
        namespace: str,
        *,
        hits: int,
        misses: int,
        hot_samples: int,
        computed: bool,
        seconds: float,
        stale: int = 0,
        l1_hits: int = 0,
    ) -> None:
        """One client request, answered in ``seconds``, ``computed`` if it called the model.

        :meth:`record` for the request path, without its keyword dict. ``stale``: of the hits,
        those served stale (counted as hits here; the metrics tell them apart). ``l1_hits``: of
        the hits, those the in-process tier answered (no Redis command).
        """
        with self._lock:
            counts = self._pending[namespace]
            counts["requests"] += 1
            counts["hits"] += hits
            counts["misses"] += misses
            if computed:
                counts["computed_requests"] += 1
                counts["computed_us"] += int(seconds * 1_000_000)
            else:
                counts["cached_requests"] += 1
                counts["cached_us"] += int(seconds * 1_000_000)
            if hot_samples:
                counts["hot_samples"] += hot_samples
            if l1_hits:
                counts["l1_hits"] += l1_hits

    def record_backend_error(self, namespace: str, *, code: str, seconds: float) -> None:
        """A failed backend call: not kept in Redis; the metrics (core/metrics_recorder.py) count it."""

    def pending(self, namespace: str) -> dict[str, int]:
        """Counts recorded in this process and not yet flushed to Redis."""
        with self._lock:
            return dict(self._pending.get(namespace, {}))

    def flush(self, client: RedisClient, keyspace: KeySpace) -> bool:
        """Add pending counts (and the writes riding along) to Redis in one round trip.

        On failure the counts are kept for the next flush.
        """
        with self._lock:
            pending, self._pending = self._pending, defaultdict(Counter)
        try:
            pipe = client.pipeline(transaction=False)  # on a cluster, its client may be built now
        except REDIS_FAILURES:
            self._keep(pending)
            return False
        for namespace, counts in pending.items():
            for field, amount in counts.items():
                if amount:
                    pipe.hincrby(keyspace.stats(namespace), field, amount)
        if self._minutes_kept_seconds > 0:
            queue_minute_counts(
                pipe,
                keyspace,
                pending,
                minute=minute_of(self._clock()),
                retention_seconds=self._minutes_kept_seconds,
            )
        counters = len(pipe)
        for writes in self._alongside:
            writes.write_pending(pipe, keyspace)
        if not len(pipe):
            return True
        try:
            replies: list[object] | None = pipe.execute(raise_on_error=False)
        except REDIS_FAILURES:
            replies = None
        # An error reply to a rider (a Redis refusing scripts) does not cost the counters.
        if replies is None or any(isinstance(reply, Exception) for reply in replies[:counters]):
            self._keep(pending)
            return False
        return True

    def _keep(self, unflushed: dict[str, Counter[str]]) -> None:
        """Give counts a flush could not write back to the next one."""
        with self._lock:
            for namespace, counts in unflushed.items():
                self._pending[namespace].update(counts)


def read_stats(client: RedisClient, keyspace: KeySpace, namespace: str) -> dict[str, int]:
    """The flushed counters of one model namespace (zeros where nothing was counted)."""
    try:
        stored = cast(dict[bytes, bytes], client.hgetall(keyspace.stats(namespace)))
    except REDIS_FAILURES as exc:
        raise CacheUnavailable(str(exc)) from exc
    totals = {field: 0 for field in STAT_FIELDS}
    for field, value in stored.items():
        totals[field.decode()] = int(value)
    return totals
