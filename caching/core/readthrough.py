"""Read-through prediction: one lookup, one backend call for the distinct misses, one write.

Around that core: per-model policies (TTL with jitter, stale-while-revalidate,
stale-if-error, key rules, admission, entry size limits, compression, a maximum age),
request directives (``Cache-Control``), single-flight across processes (Redis locks with
tokens and expiry) and circuit breakers on Redis and on each model.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from caching.backends.base import (
    Backend,
    BackendError,
    BackendRejectedInput,
    BackendResult,
    BackendTimeout,
    BackendUnavailable,
    checked_result,
    client_numbered,
    with_reason,
)
from caching.core.breaker import BreakerRegistry, CircuitBreaker
from caching.core.canonical import canonical_bytes
from caching.core.codec import CachedPrediction, CodecError, decode, encode
from caching.core.hotset import HotSampler
from caching.core.keys import instance_digest, request_context, version_tag
from caching.core.spec import (
    BYPASS,
    CACHE,
    DISABLED,
    HIT,
    MISS,
    NO_DIRECTIVES,
    PARTIAL,
    STALE,
    CacheSpec,
    Directives,
    NotCached,
    Prediction,
    VersionChange,
    common,
    tag_of,
)
from caching.core.stats import StatsRecorder
from caching.core.store import ADVANCED, SUPERSEDED, CacheUnavailable, Fresh, Lookup, PredictionStore

logger = logging.getLogger(__name__)

_POLL_START, _POLL_MAX = 0.005, 0.05  # single-flight waiters re-read the cache at this pace

VersionListener = Callable[[CacheSpec, VersionChange], None]


@dataclass
class _Request:
    """One predict request as it moves through the cache."""

    spec: CacheSpec
    backend: Backend
    instances: Sequence[Any]
    parameters: dict[str, Any] | None
    directives: Directives
    first_index: dict[str, int]  # distinct digests, in order of first appearance
    lookup: Lookup | None = None
    found: dict[str, CachedPrediction] = field(default_factory=dict)
    stale: dict[str, CachedPrediction] = field(default_factory=dict)  # revalidated in background
    fallback: dict[str, CachedPrediction] = field(default_factory=dict)  # stale-if-error only
    computed: list[str] = field(default_factory=list)
    background: bool = False  # a stale-while-revalidate refresh, not a client's request
    # Told of version changes found by the background refresh this request starts (a client's
    # own change is in its Prediction).
    version_listener: VersionListener | None = None
    stored: bool = False
    answer_is_current: bool = False  # a computed answer came from the version the cache follows
    version_change: VersionChange | None = None

    def positions(self, digests: Sequence[str]) -> list[int]:
        return [self.first_index[digest] for digest in digests]


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
    ) -> None:
        self.store = store
        self.max_depth = max_depth
        self.stats = stats
        self.clock = clock
        self.redis_breaker = redis_breaker or CircuitBreaker("redis")
        self.backend_breakers = backend_breakers or BreakerRegistry()
        self.single_flight_wait = single_flight_wait
        self.hot = hot  # samples fresh hits for refresh-ahead; None or one_in=0: no sampling
        self._refresher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="predcache-refresh")
        self._refresh_slots = threading.BoundedSemaphore(16)  # refreshes running or queued

    def shutdown(self) -> None:
        """Stop the background refreshes (queued ones are dropped: entries just stay stale)."""
        self._refresher.shutdown(wait=False, cancel_futures=True)

    # --- the request path ----------------------------------------------------------------

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
        directives = directives or NO_DIRECTIVES
        digests = self.instance_digests(spec, instances, parameters)
        if spec.mode != CACHE or directives.no_store:
            if directives.only_if_cached:
                raise NotCached("the cache is not used for this request")
            return self._pass_through(spec, backend, instances, parameters)
        first_index: dict[str, int] = {}
        for index, digest in enumerate(digests):
            first_index.setdefault(digest, index)
        request = _Request(
            spec, backend, instances, parameters, directives, first_index, version_listener=version_listener
        )
        distinct = list(first_index)

        request.lookup = self._redis(lambda: self.store.lookup(spec.namespace, spec.model_version, distinct))
        if request.lookup is None:
            if directives.only_if_cached:
                raise NotCached("the cache is unavailable")
            return self._pass_through(spec, backend, instances, parameters)
        self._classify(request, distinct)
        sampled = 0
        if self.hot is not None and request.found and client_request:
            # Only fresh hits: entries the cache serves as they are, the ones worth keeping fresh.
            sampled = self.hot.offer(spec.namespace, request.found, first_index, instances, parameters)
        missing = [d for d in distinct if d not in request.found and d not in request.stale]
        if missing and directives.only_if_cached:
            raise NotCached(f"{len(missing)} of {len(distinct)} distinct instances are not cached")
        if missing:
            self._fill(request, missing)
        if request.stale:
            self._revalidate_later(request)

        computed = set(request.computed)
        misses = sum(1 for digest in digests if digest in computed)
        hits = len(digests) - misses
        if client_request:
            self.stats.record(spec.namespace, requests=1, hits=hits, misses=misses, hot_samples=sampled)
        answers = [request.found.get(digest) or request.stale[digest] for digest in digests]
        now = self.clock()
        served_from_cache = [request.found.get(d) or request.stale[d] for d in distinct if d not in computed]
        stale_served = any(d in request.stale for d in digests) or any(
            d in request.fallback and d not in computed for d in digests
        )
        status = STALE if stale_served else (HIT if not misses else (MISS if not hits else PARTIAL))
        return Prediction(
            predictions=[entry.prediction for entry in answers],
            cache_status=status,
            hits=hits,
            misses=misses,
            # Entries written at different times may come from different model versions:
            # report a version only when every prediction in the answer shares it.
            model_version_id=common([entry.model_version_id for entry in answers]),
            deployed_model_id=common([entry.deployed_model_id for entry in answers]),
            stored=request.stored,
            version_change=request.version_change,
            age=int(max(entry.age(now) for entry in served_from_cache)) if served_from_cache else None,
        )

    def instance_digests(
        self, spec: CacheSpec, instances: Sequence[Any], parameters: dict[str, Any] | None
    ) -> list[str]:
        """The digest naming each instance's entry; raises ``InvalidJSON`` for bad input."""
        context = request_context(
            model_identity=spec.model_identity,
            model_version=spec.model_version,
            canonical_parameters=canonical_bytes(parameters, max_depth=self.max_depth),
        )
        return [
            instance_digest(
                context, canonical_bytes(instance, max_depth=self.max_depth, rules=spec.key_rules)
            )
            for instance in instances
        ]

    # --- reading -------------------------------------------------------------------------

    def _classify(self, request: _Request, distinct: list[str]) -> None:
        """Sort the looked-up entries into fresh hits, stale-while-revalidate and fallbacks."""
        spec, directives, lookup = request.spec, request.directives, request.lookup
        assert lookup is not None
        now = self.clock()
        for digest, raw in zip(distinct, lookup.raw_values, strict=True):
            entry = self._decoded(spec, raw)
            if entry is None:
                continue
            if entry.generation != lookup.generation:
                continue  # purged
            if spec.follows_versions and tag_of(entry) != lookup.current_version:
                continue  # computed by a version the cache no longer follows
            if not spec.pin_admits(entry.model_version_id, entry.deployed_model_id):
                continue
            age = entry.age(now)
            if spec.max_age is not None and age > spec.max_age:
                continue  # the model's invalidation rule: never served past this age
            if directives.no_cache or (directives.max_age is not None and age > directives.max_age):
                continue  # the client asked for a newer answer
            if not directives.fresh_enough(entry, now, spec.max_age):
                continue  # min-fresh: it expires too soon (or has), so it is computed again now
            if entry.is_fresh(now):
                request.found[digest] = entry
                continue
            overdue = now - (entry.fresh_until or now)
            if overdue <= spec.stale_while_revalidate:
                request.stale[digest] = entry
            elif overdue <= spec.stale_if_error:
                request.fallback[digest] = entry

    # --- computing -----------------------------------------------------------------------

    def _fill(self, request: _Request, missing: list[str]) -> None:
        """Compute the misses once across processes: take their locks, wait for the others'."""
        spec = request.spec
        token = secrets.token_hex(8)
        lock_seconds = spec.backend_timeout + 5
        owned = self._redis(lambda: self.store.acquire(spec.namespace, missing, token, lock_seconds))
        if owned is None:  # Redis went away since the lookup: compute everything, store nothing
            owned = set(missing)
            token = ""
        mine = [d for d in missing if d in owned]
        theirs = [d for d in missing if d not in owned]
        if mine:
            self._compute(request, mine, token)
        if theirs:
            self.stats.record(spec.namespace, single_flight_waits=len(theirs))
            leftover = self._wait_for_others(request, theirs)
            if leftover:
                self._compute(request, leftover, "")
        if request.answer_is_current and spec.follows_versions and request.computed:
            # Fresh answers are of the version the cache now follows. Cached predictions in
            # this same request written by another version (this answer moved the cache, or
            # another process did since the lookup) are recomputed: one response, one version.
            current = tag_of(request.found[request.computed[0]])
            other = [
                d
                for d in request.first_index
                if d not in request.computed and tag_of(request.found.get(d) or request.stale[d]) != current
            ]
            if other:
                for digest in other:
                    request.stale.pop(digest, None)
                self._compute(request, other, "")

    def _compute(self, request: _Request, digests: list[str], token: str) -> None:
        """One backend call for ``digests``; store what may be stored; release their locks."""
        spec, lookup = request.spec, request.lookup
        assert lookup is not None
        try:
            result = self._call_backend(
                spec,
                request.backend,
                [request.instances[i] for i in request.positions(digests)],
                request.parameters,
                request.positions(digests),
            )
        except BaseException as exc:
            if token:  # waiters must not sit out their bound for an answer that will not come
                self._redis(lambda: self.store.release(spec.namespace, digests, token))
            if not isinstance(exc, BackendError) or isinstance(exc, BackendRejectedInput):
                raise
            if any(d not in request.fallback for d in digests):
                raise
            logger.warning("%s failed, serving stale predictions: %s", spec.model_name, exc)
            self.stats.record(spec.namespace, stale_if_error=len(digests))
            request.found.update({d: request.fallback[d] for d in digests})
            return
        now = self.clock()
        entries = {
            digest: CachedPrediction(
                prediction=prediction,
                generation=lookup.generation,
                created_at=now,
                model_version_id=result.model_version_id,
                deployed_model_id=result.deployed_model_id,
                fresh_until=now + self._fresh_seconds(spec),
            )
            for digest, prediction in zip(digests, result.predictions, strict=True)
        }
        request.found.update(entries)
        request.computed += [d for d in digests if d not in request.computed]
        stored, change, current = self._store(spec, lookup, entries, result, token)
        request.stored = request.stored or stored
        request.answer_is_current = request.answer_is_current or current
        request.version_change = request.version_change or change
        if change is not None and request.version_listener is not None and request.background:
            request.version_listener(spec, change)

    def _store(
        self,
        spec: CacheSpec,
        lookup: Lookup,
        entries: dict[str, CachedPrediction],
        result: BackendResult,
        token: str,
    ) -> tuple[bool, VersionChange | None, bool]:
        """Write fresh entries (and release locks) in one round trip.

        Returns whether any was stored, the version change the answer caused, and whether
        the answer came from the version the cache follows.
        """
        storable = result.cacheable and spec.pin_admits(result.model_version_id, result.deployed_model_id)
        fresh: list[Fresh] = []
        if storable:
            keep = spec.stale_while_revalidate + spec.stale_if_error
            for digest, entry in entries.items():
                value = encode(entry, compress_over=spec.compress_over, compression=spec.compression)
                if spec.max_entry_bytes is not None and len(value) > spec.max_entry_bytes:
                    self.stats.record(spec.namespace, too_large=1)
                    continue
                fresh_for = (entry.fresh_until or entry.created_at) - entry.created_at
                fresh.append(Fresh(digest, value, max(1, math.ceil(fresh_for + keep))))
        if len(fresh) < len(entries):
            self.stats.record(spec.namespace, not_stored=len(entries) - len(fresh))
        if not storable or (not fresh and not token):
            if token:
                self._redis(lambda: self.store.release(spec.namespace, list(entries), token))
            return False, None, False
        version = version_tag(result.model_version_id, result.deployed_model_id)
        outcome = self._redis(
            lambda: self.store.save(
                spec.namespace,
                lookup,
                fresh,
                version=version,
                follow_versions=spec.follows_versions,
                admit_after=spec.admit_after,
                admission_window=max(spec.ttl_seconds, 60),
                lock_token=token,
                # Entries held back (too large) still hold locks: release those too.
                locks=[d for d in entries if d not in {f.digest for f in fresh}] if token else (),
                handoff_seconds=self.single_flight_wait + 1,
            )
        )
        if outcome is None:
            logger.warning("could not store predictions of %s", spec.model_name)
            self.stats.record(spec.namespace, store_errors=1)
            return False, None, False
        if outcome.status == SUPERSEDED:
            self.stats.record(spec.namespace, not_stored=len(fresh))
            return False, None, False
        if outcome.stored < len(fresh):
            self.stats.record(spec.namespace, not_admitted=len(fresh) - outcome.stored)
        if outcome.status == ADVANCED:
            logger.info(
                "%s now follows version %r (was %r)", spec.model_name, version, outcome.previous_version
            )
            self.stats.record(spec.namespace, version_changes=1)
            change = VersionChange(
                outcome.previous_version, version, result.model_version_id, result.deployed_model_id
            )
            return outcome.stored > 0, change, True
        return outcome.stored > 0, None, True

    def _wait_for_others(self, request: _Request, digests: list[str]) -> list[str]:
        """Re-read entries other requests are computing; after the wait bound, compute the rest."""
        spec = request.spec
        deadline = time.monotonic() + min(self.single_flight_wait, spec.backend_timeout + 1)
        pause = _POLL_START
        assert request.lookup is not None
        # What this request saw (and passed over: purged, stale, too old for its directives).
        seen = dict(zip(request.first_index, request.lookup.raw_values, strict=True))
        waiting = list(digests)
        while waiting and time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(pause * 2, _POLL_MAX)
            # Locks first, entries second: a lock is released in the same atomic write that
            # stores its entries, so a released lock means the entry (if any) is readable now.
            state = self._redis(lambda: self.store.waiting_state(spec.namespace, waiting))
            lookup = self._redis(lambda: self.store.lookup(spec.namespace, spec.model_version, waiting))
            if state is None or lookup is None:
                break
            held, handed = state
            for digest, raw in zip(list(waiting), lookup.raw_values, strict=True):
                for candidate in (raw, handed.get(digest)):
                    entry = self._decoded(spec, candidate) if candidate != seen.get(digest) else None
                    if (
                        entry is not None
                        and entry.generation == lookup.generation
                        and entry.is_fresh(self.clock())
                        and (not spec.follows_versions or tag_of(entry) == lookup.current_version)
                    ):
                        request.found[digest] = entry
                        waiting.remove(digest)
                        break
            if not held.intersection(waiting):
                break  # the others finished without an answer for these (they failed): compute now
        if waiting:
            self.stats.record(spec.namespace, single_flight_timeouts=len(waiting))
        return waiting

    def _revalidate_later(self, request: _Request) -> None:
        """Refresh stale entries in the background, once across processes (their locks)."""
        spec = request.spec
        token = secrets.token_hex(8)
        digests = list(request.stale)
        owned = self._redis(
            lambda: self.store.acquire(spec.namespace, digests, token, spec.backend_timeout + 5)
        )
        mine = [d for d in digests if owned and d in owned]
        if not mine:
            return
        refresh = _Request(
            spec,
            request.backend,
            request.instances,
            request.parameters,
            Directives(),
            request.first_index,
            lookup=request.lookup,
            fallback=dict(request.stale),  # if the refresh fails, keep what is there
            background=True,
            version_listener=request.version_listener,
        )
        self.stats.record(spec.namespace, revalidations=len(mine))

        if not self._refresh_slots.acquire(blocking=False):
            # Refreshes are backed up (the model is slow): let the stale entries be, for now.
            self._redis(lambda: self.store.release(spec.namespace, mine, token))
            return

        def run() -> None:
            try:
                self._compute(refresh, mine, token)
            except Exception:  # a background refresh must never take the process down
                logger.exception("background refresh of %s failed", spec.model_name)
            finally:
                self._refresh_slots.release()

        self._refresher.submit(run)

    # --- the edges: Redis, the backend, pass-through ------------------------------------------

    def _redis(self, call: Callable[[], Any]) -> Any:
        """Run a store call behind the Redis breaker; None when Redis is skipped or failing."""
        if not self.redis_breaker.allow():
            return None
        try:
            value = call()
        except CacheUnavailable as exc:
            self.redis_breaker.failure()
            logger.warning("redis unavailable: %s", exc)
            return None
        self.redis_breaker.success()
        return value

    def _decoded(self, spec: CacheSpec, raw: bytes | None) -> CachedPrediction | None:
        """The entry in ``raw``; None for no value, and for one that cannot be decoded (logged)."""
        if raw is None:
            return None
        try:
            return decode(raw)
        except CodecError as exc:
            logger.warning("undecodable cache entry for %s, treated as a miss: %s", spec.model_name, exc)
            self.stats.record(spec.namespace, decode_errors=1)
            return None

    def _fresh_seconds(self, spec: CacheSpec) -> float:
        """The TTL, shortened at random by up to ``ttl_jitter`` of it."""
        return float(spec.ttl_seconds * (1 - spec.ttl_jitter * random.random()))

    def _call_backend(
        self,
        spec: CacheSpec,
        backend: Backend,
        instances: Sequence[Any],
        parameters: dict[str, Any] | None,
        positions: Sequence[int],
    ) -> BackendResult:
        """One backend call behind the model's breaker; ``positions`` number instances as the client did.

        Only an unavailable or overloaded model (no connection, timeouts, 429/502/503/504)
        counts against the breaker. Anything a request's own instances can cause (a rejection,
        a model server's 500, a model's code raising) is that request's error and neutral, so
        no client can switch a model off for the others.
        """
        breaker = self.backend_breakers.get(spec.namespace)
        if not breaker.allow():
            try:  # invalid input still gets its 400, not the model's 503
                backend.check(instances, parameters)
            except BackendRejectedInput as exc:
                raise client_numbered(exc, positions) from exc
            self.stats.record(spec.namespace, breaker_rejections=1)
            raise BackendUnavailable(
                f"{spec.model_name} is failing; calls resume in {breaker.retry_after():.1f}s (circuit open)"
            )
        self.stats.record(spec.namespace, backend_calls=1, backend_instances=len(instances))
        started = time.perf_counter()
        try:
            result = checked_result(backend.predict(instances, parameters), len(instances))
        except BackendRejectedInput as exc:
            breaker.neutral()
            raise client_numbered(exc, positions) from exc
        except (BackendUnavailable, BackendTimeout):
            breaker.failure()
            raise
        except BackendError:
            breaker.neutral()
            raise
        except Exception as exc:  # a model's own code failing is the model's error, not a 500
            breaker.neutral()
            logger.exception("%s raised", spec.model_name)
            raise BackendError(
                with_reason(f"{spec.model_name} failed ({type(exc).__name__})", str(exc))
            ) from exc
        except BaseException:
            breaker.neutral()  # interrupted: nothing learned about the model
            raise
        breaker.success()
        # What answering costs the model: the stats estimate from it what the hits saved.
        elapsed_us = round((time.perf_counter() - started) * 1_000_000)
        self.stats.record(spec.namespace, backend_us=elapsed_us, backend_answered=len(instances))
        return result

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
