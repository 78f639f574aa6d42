"""Read-through prediction: one lookup, one backend call for the distinct misses, one write.

The parts: :mod:`~caching.core.freshness` sorts looked-up entries, :mod:`~caching.core.singleflight`
waits on other requests' computations, :mod:`~caching.core.revalidation` refreshes stale
entries in the background, :mod:`~caching.core.writing` stores answers, all over a
:class:`~caching.core.store.PredictionStore`. A hit is one round trip (a plain MGET when every
entry was last seen fresh, see :mod:`~caching.core.fresh_hints`); a miss is two: the lookup
that also takes the locks of what it computes, and the save that stores it and releases them.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from caching.backends.base import Backend
from caching.core.answering import hit_prediction, merged_prediction
from caching.core.backend_calls import BackendCaller
from caching.core.breaker import BreakerRegistry, CircuitBreaker
from caching.core.canonical import canonical_bytes
from caching.core.codec import DecodedEntries
from caching.core.computing import Answers, Computer, Request, VersionListener
from caching.core.fresh_hints import FreshHints
from caching.core.freshness import ServedState, Sorted, sort_entries
from caching.core.guard import StoreGuard
from caching.core.hotset import HotSampler
from caching.core.integrity import IntegrityFailures, ValueKeys
from caching.core.keys import instance_digests, request_context
from caching.core.revalidation import BackgroundRefresher
from caching.core.sentinels import NoValue
from caching.core.singleflight import Waiter
from caching.core.spec import (
    BYPASS,
    CACHE,
    DISABLED,
    NO_DIRECTIVES,
    CacheSpec,
    Directives,
    NotCached,
    Prediction,
)
from caching.core.stats import StatsRecorder
from caching.core.store import LockRequest, PredictionStore

logger = logging.getLogger(__name__)


class ReadThroughCache:
    """Serves predictions from the store and sends only the distinct misses to the backend."""

    def __init__(
        self,
        store: PredictionStore,
        *,
        max_depth: int,
        stats: StatsRecorder,
        clock: Callable[[], float] = time.time,
        redis_breaker: CircuitBreaker | None = None,
        backend_breakers: BreakerRegistry | None = None,
        single_flight_wait: float = 5.0,
        hot: HotSampler | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        refresher: BackgroundRefresher | None = None,
        value_keys: ValueKeys | None = None,
    ) -> None:
        """``value_keys``: values are tagged with them when written and verified when read (None:
        values are neither tagged nor checked)."""
        self.store = store
        self.max_depth = max_depth
        self.stats = stats
        self.clock = clock
        self.single_flight_wait = single_flight_wait
        self.hot = hot  # samples fresh hits for refresh-ahead; None or one_in=0: no sampling
        self.hints = FreshHints()
        self._monotonic = monotonic
        # A hit reads its entry, and parses (and verifies) it only if it changed.
        self._decoded = DecodedEntries(keys=value_keys)
        self._integrity = IntegrityFailures(stats)
        self._guard = StoreGuard(redis_breaker or CircuitBreaker("redis"))
        self._call_backend = BackendCaller(backend_breakers or BreakerRegistry(), stats)
        waiter = Waiter(
            store, self._guard, self._decoded, self._integrity, clock=clock, monotonic=monotonic, sleep=sleep
        )
        self._computer = Computer(
            store,
            stats,
            clock,
            single_flight_wait,
            self.hints,
            self._guard,
            self._call_backend,
            waiter,
            value_keys,
        )
        self._refresher = refresher or BackgroundRefresher()

    @property
    def redis_breaker(self) -> CircuitBreaker:
        return self._guard.breaker

    @redis_breaker.setter
    def redis_breaker(self, breaker: CircuitBreaker) -> None:
        self._guard.breaker = breaker

    @property
    def backend_breakers(self) -> BreakerRegistry:
        return self._call_backend.breakers

    @backend_breakers.setter
    def backend_breakers(self, breakers: BreakerRegistry) -> None:
        self._call_backend.breakers = breakers

    def shutdown(self) -> None:
        """Stop the background refreshes (queued ones are dropped: entries just stay stale)."""
        self._refresher.shutdown()

    def predict(
        self,
        spec: CacheSpec,
        backend: Backend,
        instances: Sequence[Any],
        parameters: dict[str, Any] | None,
        directives: Directives | None = None,
        version_listener: VersionListener | None = None,
        *,
        client_request: bool = True,
    ) -> Prediction:
        """Answer ``instances`` in order; raises ``InvalidJSON`` before any I/O for bad input.

        ``version_listener`` is told of a version change that a background refresh started by
        this request finds later (the request's own change is in the answer). Work that is no
        client's request (refresh-ahead) passes ``client_request=False``: it is not counted as
        a request, its hits and misses, nor sampled as hot.
        """
        started = self._monotonic()
        directives = directives or NO_DIRECTIVES
        digests = self.instance_digests(spec, instances, parameters)
        if spec.mode != CACHE or directives.no_store:
            if directives.only_if_cached:
                raise NotCached("the cache is not used for this request")
            return self._pass_through(spec, backend, instances, parameters)
        first_index = {digest: index for index, digest in enumerate(digests)}
        if len(first_index) < len(digests):  # repeated instances: each keeps its first position
            first_index = {}
            for index, digest in enumerate(digests):
                first_index.setdefault(digest, index)
        distinct = list(first_index)
        now = self.clock()
        locks = self._locks_to_take(spec, directives, distinct, now)
        lookup = self._guard(
            lambda: self.store.lookup(spec.namespace, spec.model_version, distinct, locks=locks, l1=spec.l1)
        )
        if isinstance(lookup, NoValue):
            if directives.only_if_cached:
                raise NotCached("the cache is unavailable")
            return self._pass_through(spec, backend, instances, parameters)
        entries = sort_entries(
            distinct,
            lookup.raw_values,
            spec=spec,
            state=ServedState(lookup.generation, lookup.current_version),
            now=now,
            directives=directives,
            decode_entry=self._decoded.decode,
        )
        for _ in entries.undecodable:
            logger.warning("undecodable cache entry for %s, treated as a miss", spec.model_name)
            self.stats.record(spec.namespace, decode_errors=1)
        if entries.forged:
            self._integrity.failed(spec.namespace, spec.model_name, len(entries.forged))
        if locks is not None:  # a plain read found what the hints said: nothing new to note
            self.hints.remember(entries.fresh)
        if entries.missing:
            self.hints.forget(entries.missing)
        sampled = 0
        if self.hot is not None and entries.fresh and client_request:
            # Only fresh hits: entries the cache serves as they are, the ones worth keeping fresh.
            sampled = self.hot.offer(spec.namespace, entries.fresh, first_index, instances, parameters)
        if not (entries.missing or entries.revalidate or lookup.locked):
            prediction = hit_prediction(entries.fresh, digests, now)  # most requests: a hit
            prediction.l1 = lookup.from_memory
        else:
            if entries.missing and directives.only_if_cached:
                raise NotCached(
                    f"{len(entries.missing)} of {len(distinct)} distinct instances are not cached"
                )
            request = Request(
                spec,
                backend,
                instances,
                parameters,
                first_index,
                lookup,
                locks.token if locks is not None else secrets.token_hex(8),
                version_listener=version_listener,
            )
            prediction = self._compute(request, digests, entries)
        if client_request:
            self.stats.record_request(
                spec.namespace,
                hits=prediction.hits,
                misses=prediction.misses,
                hot_samples=sampled,
                computed=prediction.misses > 0,
                seconds=self._monotonic() - started,
                stale=prediction.stale,
                l1_hits=prediction.hits if prediction.l1 else 0,
            )
        return prediction

    def _compute(self, request: Request, digests: list[str], entries: Sorted) -> Prediction:
        """Compute what was not found servable (once across processes), then merge the answer."""
        spec, lookup = request.spec, request.lookup
        answers = Answers(dict(entries.fresh), dict(entries.revalidate), dict(entries.fallback))
        unused = set(lookup.locked).difference(entries.missing, entries.revalidate)
        if entries.missing:
            self._computer.fill(request, answers, list(entries.missing), unused)
        elif unused:  # locks the lookup took for entries found servable after all
            self._guard(lambda: self.store.release(spec.namespace, list(unused), request.token))
        if answers.stale:
            self._revalidate_later(request, answers)
        return merged_prediction(answers, digests, request.first_index, self.clock())

    def instance_digests(
        self, spec: CacheSpec, instances: Sequence[Any], parameters: dict[str, Any] | None
    ) -> list[str]:
        """The digest naming each instance's entry; raises ``InvalidJSON`` for bad input."""
        context = request_context(
            model_identity=spec.model_identity,
            model_version=spec.model_version,
            canonical_parameters=canonical_bytes(parameters, max_depth=self.max_depth),
        )
        rules, depth = spec.key_rules, self.max_depth
        return instance_digests(
            context, [canonical_bytes(i, max_depth=depth, rules=rules) for i in instances]
        )

    def _locks_to_take(
        self, spec: CacheSpec, directives: Directives, distinct: list[str], now: float
    ) -> LockRequest | None:
        """None (a plain read) when every entry was last seen fresh, else the locks the lookup takes."""
        if directives.only_if_cached:
            return None  # computes nothing
        if not directives.no_cache and self.hints.all_fresh(distinct, now + (directives.min_fresh or 0)):
            return None
        return LockRequest(
            secrets.token_hex(8),
            spec.backend_timeout + 5,
            now + (directives.min_fresh or 0),
            spec.follows_versions,
            every_entry=directives.no_cache,
        )

    def _revalidate_later(self, request: Request, answers: Answers) -> None:
        """Refresh stale entries in the background, once across processes (their locks)."""
        spec, lookup, token = request.spec, request.lookup, request.token
        mine = [d for d in answers.stale if d in lookup.locked]
        unknown = [d for d in answers.stale if d not in lookup.locked and d not in lookup.held]
        if unknown:
            # Read again and lock in one step: only entries still stale are locked, so an entry
            # another request refreshed since this one's lookup is not refreshed a second time.
            locks = LockRequest(token, spec.backend_timeout + 5, self.clock(), spec.follows_versions)
            again = self._guard(
                lambda: self.store.lookup(spec.namespace, spec.model_version, unknown, locks=locks)
            )
            mine += [d for d in unknown if not isinstance(again, NoValue) and d in again.locked]
        if not mine:
            return
        refresh = dataclasses.replace(request, background=True)
        # If the refresh fails, keep what is there.
        kept = Answers(found={}, fallback=dict(answers.stale))
        self.stats.record(spec.namespace, revalidations=len(mine))
        if not self._refresher.submit(
            lambda: self._computer.compute(refresh, kept, mine, token), name=spec.model_name
        ):
            # Refreshes are backed up (the model is slow): let the stale entries be, for now.
            self._guard(lambda: self.store.release(spec.namespace, mine, token))

    def _pass_through(
        self,
        spec: CacheSpec,
        backend: Backend,
        instances: Sequence[Any],
        parameters: dict[str, Any] | None,
    ) -> Prediction:
        result = self._call_backend(spec, backend, instances, parameters, range(len(instances)))
        if spec.mode != DISABLED:
            self.stats.record(spec.namespace, requests=1, bypassed=len(instances))
        return Prediction(
            predictions=result.predictions,
            cache_status=BYPASS,
            hits=0,
            misses=len(instances),
            model_version_id=result.model_version_id,
            deployed_model_id=result.deployed_model_id,
        )
