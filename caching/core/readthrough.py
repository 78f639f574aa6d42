"""Read-through prediction: one lookup, one backend call for the distinct misses, one write."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from caching.backends.base import Backend, BackendResult, checked_result
from caching.core.canonical import canonical_bytes
from caching.core.codec import CachedPrediction, CodecError, decode, encode
from caching.core.keys import instance_digest, request_context
from caching.core.stats import StatsRecorder
from caching.core.store import CacheUnavailable, Lookup, PredictionStore

logger = logging.getLogger(__name__)

HIT, MISS, PARTIAL, BYPASS = "HIT", "MISS", "PARTIAL", "BYPASS"


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """What the read-through path needs to know about one model's cache."""

    namespace: str
    model_name: str
    model_identity: str
    model_version: str
    ttl_seconds: int
    enabled: bool


@dataclass(frozen=True, slots=True)
class Prediction:
    """The answer to one predict request, with how the cache took part."""

    predictions: list[Any]
    cache_status: str
    hits: int
    misses: int
    model_version_id: str | None
    deployed_model_id: str | None
    stored: bool = False  # the fresh predictions were written to the cache


def _common(values: Sequence[str | None]) -> str | None:
    """The value all of ``values`` share, or None when they differ (or there are none)."""
    first = values[0] if values else None
    return first if all(value == first for value in values) else None


class ReadThroughCache:
    """Serves predictions from the store and sends only the distinct misses to the backend."""

    def __init__(
        self,
        store: PredictionStore,
        *,
        max_depth: int,
        stats: StatsRecorder,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.max_depth = max_depth
        self.stats = stats
        self.clock = clock

    def predict(
        self,
        spec: CacheSpec,
        backend: Backend,
        instances: Sequence[Any],
        parameters: dict[str, Any] | None,
    ) -> Prediction:
        """Answer ``instances`` in order; raises ``InvalidJSON`` before any I/O for bad input."""
        context = request_context(
            model_identity=spec.model_identity,
            model_version=spec.model_version,
            canonical_parameters=canonical_bytes(parameters, max_depth=self.max_depth),
        )
        digests = [
            instance_digest(context, canonical_bytes(instance, max_depth=self.max_depth))
            for instance in instances
        ]
        if not spec.enabled:
            return self._bypass(spec, backend, instances, parameters)
        first_index: dict[str, int] = {}  # distinct digests, in order of first appearance
        for index, digest in enumerate(digests):
            first_index.setdefault(digest, index)
        try:
            lookup = self.store.lookup(spec.namespace, spec.model_version, list(first_index))
        except CacheUnavailable as exc:
            logger.warning("redis unavailable, serving %s from the backend: %s", spec.model_name, exc)
            return self._bypass(spec, backend, instances, parameters)

        found = self._usable_entries(spec, lookup, list(first_index))
        missing = [digest for digest in first_index if digest not in found]
        stored = False
        if missing:
            fresh = self._call_backend(
                spec, backend, [instances[first_index[d]] for d in missing], parameters
            )
            entries, stored = self._store_fresh(spec, lookup, missing, fresh)
            found.update(entries)

        missing_set = set(missing)
        misses = sum(1 for digest in digests if digest in missing_set)
        hits = len(digests) - misses
        self.stats.record(spec.namespace, requests=1, hits=hits, misses=misses)
        answers = [found[digest] for digest in digests]
        return Prediction(
            predictions=[entry.prediction for entry in answers],
            cache_status=HIT if not misses else (MISS if not hits else PARTIAL),
            hits=hits,
            misses=misses,
            # Entries written at different times may come from different model versions:
            # report a version only when every prediction in the answer shares it.
            model_version_id=_common([entry.model_version_id for entry in answers]),
            deployed_model_id=_common([entry.deployed_model_id for entry in answers]),
            stored=stored,
        )

    def _usable_entries(
        self, spec: CacheSpec, lookup: Lookup, digests: list[str]
    ) -> dict[str, CachedPrediction]:
        found: dict[str, CachedPrediction] = {}
        for digest, raw in zip(digests, lookup.raw_values, strict=True):
            if raw is None:
                continue
            try:
                entry = decode(raw)
            except CodecError as exc:
                logger.warning("undecodable cache entry for %s, treated as a miss: %s", spec.model_name, exc)
                self.stats.record(spec.namespace, decode_errors=1)
                continue
            if entry.generation == lookup.generation:
                found[digest] = entry
        return found

    def _store_fresh(
        self, spec: CacheSpec, lookup: Lookup, missing: list[str], fresh: BackendResult
    ) -> tuple[dict[str, CachedPrediction], bool]:
        now = self.clock()
        entries = {
            digest: CachedPrediction(
                prediction=prediction,
                generation=lookup.generation,
                created_at=now,
                model_version_id=fresh.model_version_id,
                deployed_model_id=fresh.deployed_model_id,
            )
            for digest, prediction in zip(missing, fresh.predictions, strict=True)
        }
        try:
            self.store.save(
                spec.namespace,
                lookup,
                [(digest, encode(entry)) for digest, entry in entries.items()],
                ttl_seconds=spec.ttl_seconds,
            )
        except CacheUnavailable as exc:
            logger.warning("could not store predictions of %s: %s", spec.model_name, exc)
            self.stats.record(spec.namespace, store_errors=1)
            return entries, False
        return entries, True

    def _call_backend(
        self,
        spec: CacheSpec,
        backend: Backend,
        instances: Sequence[Any],
        parameters: dict[str, Any] | None,
    ) -> BackendResult:
        self.stats.record(spec.namespace, backend_calls=1, backend_instances=len(instances))
        return checked_result(backend.predict(instances, parameters), len(instances))

    def _bypass(
        self,
        spec: CacheSpec,
        backend: Backend,
        instances: Sequence[Any],
        parameters: dict[str, Any] | None,
    ) -> Prediction:
        result = self._call_backend(spec, backend, instances, parameters)
        self.stats.record(spec.namespace, requests=1, bypassed=len(instances))
        return Prediction(
            predictions=result.predictions,
            cache_status=BYPASS,
            hits=0,
            misses=len(instances),
            model_version_id=result.model_version_id,
            deployed_model_id=result.deployed_model_id,
        )
