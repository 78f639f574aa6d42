"""Single-flight across processes: one request computes an instance, the others wait for its answer.

The computing request holds the instance's lock (a token with an expiry, taken in the lookup
or just after it); the save that stores its answer releases it in the same atomic write. A
waiter re-reads the locks, then the entries, at a growing pace until its bound, and computes
what it still lacks itself: a waiter never waits longer than its bound, however the other
request fares.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from caching.core.codec import CachedPrediction, CodecError, DecodedEntries, IntegrityError
from caching.core.freshness import ServedState, Verdict, classify
from caching.core.guard import StoreGuard
from caching.core.integrity import IntegrityFailures
from caching.core.sentinels import NoValue
from caching.core.spec import CacheSpec
from caching.core.store import PredictionStore

POLL_START, POLL_MAX = 0.005, 0.05  # waiters re-read the store at this pace, in seconds


@dataclass(frozen=True, slots=True)
class Waited:
    """What waiting on other requests brought: their answers, and the digests still missing."""

    found: dict[str, CachedPrediction]
    leftover: list[str]


@dataclass(frozen=True, slots=True)
class Waiter:
    """Waits on other requests' computations of some digests of one model."""

    store: PredictionStore
    guard: StoreGuard
    decoded: DecodedEntries  # reads (and verifies) the values found, as the lookup's are
    integrity: IntegrityFailures
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def wait(
        self,
        spec: CacheSpec,
        digests: Sequence[str],
        *,
        seen: Mapping[str, bytes | NoValue],
        bound_seconds: float,
    ) -> Waited:
        """Re-read ``digests`` until each has an answer other than ``seen`` (what this request passed
        over), their locks are released, or ``bound_seconds`` pass."""
        deadline = self.monotonic() + bound_seconds
        pause = POLL_START
        found: dict[str, CachedPrediction] = {}
        forged: set[bytes] = set()  # counted once each, however often re-read
        waiting = list(digests)
        while waiting and self.monotonic() < deadline:
            self.sleep(pause)
            pause = min(pause * 2, POLL_MAX)
            # Locks first, entries second: a lock is released in the same atomic write that
            # stores its entries, so a released lock means the entry (if any) is readable now.
            state = self.guard(lambda: self.store.waiting_state(spec.namespace, waiting))
            lookup = self.guard(lambda: self.store.lookup(spec.namespace, spec.model_version, waiting))
            if isinstance(state, NoValue) or isinstance(lookup, NoValue):
                break
            served = ServedState(lookup.generation, lookup.current_version)
            for digest, raw in zip(list(waiting), lookup.raw_values, strict=True):
                for candidate in (raw, state.handed.get(digest)):
                    if not isinstance(candidate, bytes) or candidate == seen.get(digest):
                        continue
                    try:
                        entry = self.decoded.decode(spec.namespace, digest, candidate)
                    except IntegrityError:
                        forged.add(candidate)
                        continue
                    except CodecError:
                        continue
                    if classify(entry, spec=spec, state=served, now=self.clock()) is Verdict.FRESH:
                        found[digest] = entry
                        waiting.remove(digest)
                        break
            if not state.held.intersection(waiting):
                break  # the others finished without an answer for these (they failed): compute now
        if forged:
            self.integrity.failed(spec.namespace, spec.model_name, len(forged))
        return Waited(found, waiting)
