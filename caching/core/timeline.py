"""Per-minute counters for the dashboard: written by the stats flush, read back as a series of minutes.

Each model has one small hash per minute with traffic (``KeySpace.minute_stats``), and so has the
sum over all models (``KeySpace.all_models``), each expiring after the retention. A minute with no
traffic writes nothing, so an idle model costs no memory. Counts are filed under the minute they
are flushed in, at most one flush interval (1 s) after they were recorded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from caching.core.cluster import RedisClient, RedisPipeline
from caching.core.keys import KeySpace
from caching.core.store import REDIS_FAILURES, CacheUnavailable

# What the charts draw; the other counters stay in the lifetime totals only.
TIMELINE_FIELDS = (
    "requests",
    "hits",
    "l1_hits",
    "misses",
    "bypassed",
    "backend_calls",
    "backend_answered",
    "backend_us",
    "cached_requests",
    "cached_us",
    "computed_requests",
    "computed_us",
    "breaker_rejections",
)
_KEPT = frozenset(TIMELINE_FIELDS)


def minute_of(unix_seconds: float) -> int:
    """The minute a moment falls in, as Unix seconds // 60 (UTC)."""
    return int(unix_seconds // 60)


def queue_minute_counts(
    pipe: RedisPipeline,
    keyspace: KeySpace,
    pending: Mapping[str, Mapping[str, int]],
    *,
    minute: int,
    retention_seconds: int,
) -> None:
    """Queue HINCRBYs of ``pending`` into each model's hash of ``minute`` and the all-models one."""
    totals: Counter[str] = Counter()
    for namespace, counts in pending.items():
        kept = {field: amount for field, amount in counts.items() if amount and field in _KEPT}
        if kept:
            _queue_hash(pipe, keyspace.minute_stats(namespace, minute), kept, retention_seconds)
            totals.update(kept)
    if totals:
        _queue_hash(pipe, keyspace.minute_stats(keyspace.all_models(), minute), totals, retention_seconds)


def _queue_hash(pipe: RedisPipeline, key: str, counts: Mapping[str, int], retention_seconds: int) -> None:
    for field, amount in counts.items():
        pipe.hincrby(key, field, amount)
    pipe.expire(key, retention_seconds)


def queue_minutes_read(
    pipe: RedisPipeline, keyspace: KeySpace, namespace: str, minutes: Iterable[int]
) -> int:
    """Queue one HMGET per minute of ``namespace``; returns how many were queued."""
    queued = 0
    for minute in minutes:
        pipe.hmget(keyspace.minute_stats(namespace, minute), TIMELINE_FIELDS)
        queued += 1
    return queued


def parse_minutes(replies: Sequence[Any]) -> list[dict[str, int]]:
    """The counters of each minute from :func:`queue_minutes_read`'s replies (zeros where none)."""
    return [
        {field: int(value or 0) for field, value in zip(TIMELINE_FIELDS, reply, strict=True)}
        for reply in replies
    ]


def read_minutes(
    client: RedisClient, keyspace: KeySpace, namespace: str, minutes: Sequence[int]
) -> list[dict[str, int]]:
    """The counters of ``namespace`` in each of ``minutes``, in one round trip. Raises CacheUnavailable."""
    try:
        pipe = client.pipeline(transaction=False)
        queue_minutes_read(pipe, keyspace, namespace, minutes)
        replies = pipe.execute()
    except REDIS_FAILURES as exc:
        raise CacheUnavailable(str(exc)) from exc
    return parse_minutes(replies)
