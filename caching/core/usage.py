"""How many entries a model has in Redis and how much memory they take, measured within a budget.

Redis cannot count one model's keys without walking the keyspace, so a measurement is a SCAN for
the model's entry keys of at most ``scan_calls`` calls of ``batch`` keys (on a cluster, of each
primary in turn): the whole keyspace if it has fewer keys than that; otherwise the count is a
lower bound, and says so. Then one pipelined MEMORY USAGE of the first ``samples`` entries found.
Memory is estimated as entries times their mean sampled size. Entries a purge made unreachable
count until reclaimed or expired; SCAN may return a key twice while Redis resizes its table, so a
count can be a little high.
The result is stored in the model's usage hash, for the dashboard to read.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from caching.core.cluster import RedisClient, scan_keys
from caching.core.keys import KeySpace
from caching.core.redis_upkeep import glob_escaped
from caching.core.store import REDIS_FAILURES, CacheUnavailable


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """One measurement of a model's entries (see the module's docstring for how it is estimated)."""

    entries: int
    complete: bool  # the SCAN went round the whole keyspace: ``entries`` is exact at that moment
    sampled: int
    sampled_bytes: int
    measured_at: float
    seconds: float  # how long the measurement took

    @property
    def measured(self) -> datetime:
        return datetime.fromtimestamp(self.measured_at, tz=UTC)

    @property
    def estimated_bytes(self) -> int | None:
        if not self.sampled:
            return 0 if self.entries == 0 else None
        return round(self.entries * self.sampled_bytes / self.sampled)


def measure_usage(
    client: RedisClient,
    keyspace: KeySpace,
    namespace: str,
    *,
    scan_calls: int = 100,
    batch: int = 1000,
    samples: int = 32,
    clock: Callable[[], float] = time.time,
) -> CacheUsage:
    """Count ``namespace``'s entries and sample their memory, within the budget. Raises CacheUnavailable."""
    started = time.monotonic()
    pattern = keyspace.entry(glob_escaped(namespace), "*")
    entries, complete = 0, False
    sample_keys: list[bytes | str] = []
    try:
        walk = scan_keys(client, match=pattern, count=batch)
        for keys, walked_all in itertools.islice(walk, scan_calls):
            entries += len(keys)
            sample_keys.extend(keys[: samples - len(sample_keys)])
            complete = walked_all
        pipe = client.pipeline(transaction=False)
        for key in sample_keys:
            pipe.memory_usage(key, samples=0)
        sizes = [size for size in pipe.execute() if isinstance(size, int)] if sample_keys else []
    except REDIS_FAILURES as exc:
        raise CacheUnavailable(str(exc)) from exc
    return CacheUsage(
        entries=entries,
        complete=complete,
        sampled=len(sizes),  # an entry that expired between SCAN and MEMORY USAGE is left out
        sampled_bytes=sum(sizes),
        measured_at=clock(),
        seconds=round(time.monotonic() - started, 3),
    )


def save_usage(
    client: RedisClient, keyspace: KeySpace, namespace: str, usage: CacheUsage, *, keep_seconds: int
) -> None:
    """Store ``usage`` as the model's last measurement for ``keep_seconds``. Raises CacheUnavailable."""
    fields: dict[Any, Any] = {
        name: int(value) if isinstance(value, bool) else value for name, value in asdict(usage).items()
    }
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hset(keyspace.usage(namespace), mapping=fields)
        pipe.expire(keyspace.usage(namespace), keep_seconds)
        pipe.execute()
    except REDIS_FAILURES as exc:
        raise CacheUnavailable(str(exc)) from exc


def parse_usage(stored: Mapping[bytes, bytes]) -> CacheUsage | None:
    """A stored measurement (an HGETALL of the usage hash), or None if none is stored."""
    if not stored:
        return None
    values = {name.decode(): value.decode() for name, value in stored.items()}
    return CacheUsage(
        entries=int(values["entries"]),
        complete=values["complete"] == "1",
        sampled=int(values["sampled"]),
        sampled_bytes=int(values["sampled_bytes"]),
        measured_at=float(values["measured_at"]),
        seconds=float(values["seconds"]),
    )
