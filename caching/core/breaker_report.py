"""Each process's breakers that are not closed, published to Redis with the stats flush.

Breakers live in each process. The dashboard can only show what processes report: every flush,
a process writes ``<state> <unix seconds>`` under its own field of the model's breakers hash for
each backend breaker that is open or half-open (and for its Redis breaker, under the all-models
namespace), and deletes its field once the breaker closes. A process that dies leaves a field
that stops being refreshed: readers ignore fields older than :data:`REPORT_FRESH_SECONDS`, and
the hash expires after :data:`REPORT_KEEP_SECONDS` without a write.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from caching.core.breaker import CLOSED, CircuitBreaker
from caching.core.cluster import RedisPipeline
from caching.core.keys import KeySpace

REPORT_FRESH_SECONDS = 30.0
REPORT_KEEP_SECONDS = 120


def fresh_seconds(flush_interval: float) -> float:
    """How old a report may be and still stand: three flushes, and never under 30 s."""
    return max(REPORT_FRESH_SECONDS, 3 * flush_interval)


class BreakerReport:
    """A rider of the stats flush (:class:`caching.core.stats.PendingWrites`) reporting breaker states."""

    def __init__(
        self,
        breakers: Callable[[], Iterable[tuple[str, CircuitBreaker]]],
        process: str,
        clock: Callable[[], float] = time.time,
        flush_interval: float = 1.0,
    ) -> None:
        """``breakers`` names the breakers to report at each flush, by the namespace they belong to."""
        self._breakers = breakers
        self._process = process
        self._clock = clock
        self._keep_seconds = int(max(REPORT_KEEP_SECONDS, 4 * fresh_seconds(flush_interval)))
        self._lock = threading.Lock()
        self._reported: set[str] = set()  # namespaces where this process's field may stand

    def write_pending(self, pipe: RedisPipeline, keyspace: KeySpace) -> int:
        """Queue this process's field for each breaker not closed, and its removal where one closed."""
        now = self._clock()
        queued = 0
        with self._lock:
            for namespace, breaker in self._breakers():
                state = breaker.state
                key = keyspace.breakers(namespace)
                if state != CLOSED:
                    pipe.hset(key, self._process, f"{state} {now:.0f}")
                    pipe.expire(key, self._keep_seconds)
                    self._reported.add(namespace)
                    queued += 2
                elif namespace in self._reported:
                    pipe.hdel(key, self._process)
                    self._reported.discard(namespace)
                    queued += 1
        return queued


@dataclass(frozen=True, slots=True)
class ReportedBreaker:
    """One process's breaker of a model that was open or half-open at its last report."""

    process: str
    state: str
    reported_at: float


def parse_breakers(
    stored: Mapping[bytes, bytes], *, now: float, fresh_for: float = REPORT_FRESH_SECONDS
) -> list[ReportedBreaker]:
    """The fresh reports of a breakers hash, by process (stale ones, of processes gone, left out)."""
    found = []
    for process, value in stored.items():
        state, _, at = value.decode().partition(" ")
        reported_at = float(at or 0)
        if now - reported_at <= fresh_for:
            found.append(ReportedBreaker(process.decode(), state, reported_at))
    return sorted(found, key=lambda report: report.process)
