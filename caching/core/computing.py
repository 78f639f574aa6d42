"""Computing a request's misses: once across processes (single-flight), stored, one version per answer."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from caching.backends.base import Backend, BackendError, BackendRejectedInput
from caching.core.backend_calls import BackendCaller
from caching.core.codec import CachedPrediction
from caching.core.fresh_hints import FreshHints
from caching.core.guard import StoreGuard
from caching.core.integrity import ValueKeys
from caching.core.sentinels import NoValue
from caching.core.singleflight import Waiter
from caching.core.spec import CacheSpec, VersionChange, tag_of
from caching.core.stats import StatsRecorder
from caching.core.store import Lookup, PredictionStore
from caching.core.writing import write_entries

logger = logging.getLogger(__name__)

VersionListener = Callable[[CacheSpec, VersionChange], None]


@dataclass(frozen=True, slots=True)
class Request:
    """One predict request (or one background refresh) as the cache sees it after its lookup."""

    spec: CacheSpec
    backend: Backend
    instances: Sequence[Any]
    parameters: dict[str, Any] | None
    first_index: dict[str, int]  # distinct digests, in order of first appearance
    lookup: Lookup
    token: str  # the lookup's lock token
    background: bool = False  # a stale-while-revalidate refresh, not a client's request
    # Told of version changes found by the background refresh this request starts (a client's
    # own change is in its Prediction).
    version_listener: VersionListener | None = None

    def positions(self, digests: Sequence[str]) -> list[int]:
        return [self.first_index[digest] for digest in digests]


@dataclass(slots=True)
class Answers:
    """What a request has in hand so far."""

    found: dict[str, CachedPrediction]
    stale: dict[str, CachedPrediction] = field(default_factory=dict)  # revalidated in background
    fallback: dict[str, CachedPrediction] = field(default_factory=dict)  # stale-if-error only
    computed: list[str] = field(default_factory=list)
    stored: bool = False
    answer_is_current: bool = False  # a computed answer came from the version the cache follows
    version_change: VersionChange | None = None

    def entry(self, digest: str) -> CachedPrediction:
        return self.found.get(digest) or self.stale[digest]


@dataclass
class Computer:
    """Computes misses: takes (or uses the lookup's) locks, calls the model once, stores, releases."""

    store: PredictionStore
    stats: StatsRecorder
    clock: Callable[[], float]
    single_flight_wait: float
    hints: FreshHints
    _guard: StoreGuard
    _call_backend: BackendCaller
    _waiter: Waiter
    value_keys: ValueKeys | None = None  # tag the values written

    def fill(self, request: Request, answers: Answers, missing: list[str], unused: set[str]) -> None:
        """Compute the misses once across processes: with the locks taken, wait for the others'."""
        spec, lookup, token = request.spec, request.lookup, request.token
        unknown = [d for d in missing if d not in lookup.locked and d not in lookup.held]
        owned: set[str] = set()
        if unknown:  # not locked by the lookup (a plain read, or the store judged them servable)
            taken = self._guard(
                lambda: self.store.acquire(spec.namespace, unknown, token, spec.backend_timeout + 5)
            )
            # Redis went away since the lookup: compute, store nothing (no lock holds the token).
            owned = set(unknown) if isinstance(taken, NoValue) else taken
        mine = [d for d in missing if d in lookup.locked or d in owned]
        theirs = [d for d in missing if d not in lookup.locked and d not in owned]
        if mine:
            self.compute(request, answers, mine, token, release=sorted(unused))
        elif unused:
            self._guard(lambda: self.store.release(spec.namespace, sorted(unused), token))
        if theirs:
            self.stats.record(spec.namespace, single_flight_waits=len(theirs))
            waited = self._waiter.wait(
                spec,
                theirs,
                seen=dict(zip(request.first_index, lookup.raw_values, strict=True)),
                bound_seconds=min(self.single_flight_wait, spec.backend_timeout + 1),
            )
            answers.found.update(waited.found)
            if waited.leftover:
                self.stats.record(spec.namespace, single_flight_timeouts=len(waited.leftover))
                self.compute(request, answers, waited.leftover, "")
        if answers.answer_is_current and spec.follows_versions and answers.computed:
            # Fresh answers are of the version the cache now follows. Cached predictions in
            # this same request written by another version (this answer moved the cache, or
            # another process did since the lookup) are recomputed: one response, one version.
            current = tag_of(answers.found[answers.computed[0]])
            other = [
                d
                for d in request.first_index
                if d not in answers.computed and tag_of(answers.entry(d)) != current
            ]
            if other:
                for digest in other:
                    answers.stale.pop(digest, None)
                self.compute(request, answers, other, "")
                locked = [d for d in other if d in lookup.locked]  # stale ones, no longer revalidated
                if locked:
                    self._guard(lambda: self.store.release(spec.namespace, locked, token))

    def compute(
        self,
        request: Request,
        answers: Answers,
        digests: list[str],
        token: str,
        release: Sequence[str] = (),
    ) -> None:
        """One backend call for ``digests``; store what may be stored; release their locks."""
        spec = request.spec
        positions = request.positions(digests)
        try:
            result = self._call_backend(
                spec,
                request.backend,
                [request.instances[i] for i in positions],
                request.parameters,
                positions,
            )
        except BaseException as exc:
            if token:  # waiters must not sit out their bound for an answer that will not come
                self._guard(lambda: self.store.release(spec.namespace, [*digests, *release], token))
            if not isinstance(exc, BackendError) or isinstance(exc, BackendRejectedInput):
                raise
            if any(d not in answers.fallback for d in digests):
                raise
            logger.warning("%s failed, serving stale predictions: %s", spec.model_name, exc)
            self.stats.record(spec.namespace, stale_if_error=len(digests))
            answers.found.update({d: answers.fallback[d] for d in digests})
            return
        now = self.clock()
        entries = {
            digest: CachedPrediction(
                prediction=prediction,
                generation=request.lookup.generation,
                created_at=now,
                model_version_id=result.model_version_id,
                deployed_model_id=result.deployed_model_id,
                # The TTL, shortened at random by up to ``ttl_jitter`` of it, for each entry.
                fresh_until=now + spec.ttl_seconds * (1 - spec.ttl_jitter * random.random()),
            )
            for digest, prediction in zip(digests, result.predictions, strict=True)
        }
        answers.found.update(entries)
        answers.computed += [d for d in digests if d not in answers.computed]
        written = write_entries(
            store=self.store,
            guard=self._guard,
            stats=self.stats,
            spec=spec,
            lookup=request.lookup,
            entries=entries,
            result=result,
            token=token,
            release=release,
            handoff_seconds=self.single_flight_wait + 1,
            keys=self.value_keys,
        )
        if written.stored:
            self.hints.remember(entries)
        answers.stored = answers.stored or written.stored
        answers.answer_is_current = answers.answer_is_current or written.current
        answers.version_change = answers.version_change or written.change
        if written.change is not None and request.version_listener is not None and request.background:
            request.version_listener(spec, written.change)
