"""Read-through prediction: one lookup, one backend call for the distinct misses, one write."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from caching.backends.base import Backend, BackendRejectedInput, BackendResult, checked_result
from caching.core.canonical import canonical_bytes
from caching.core.codec import CachedPrediction, CodecError, decode, encode
from caching.core.keys import instance_digest, request_context, version_tag
from caching.core.stats import StatsRecorder
from caching.core.store import ADVANCED, SUPERSEDED, CacheUnavailable, Lookup, PredictionStore

logger = logging.getLogger(__name__)

HIT, MISS, PARTIAL, BYPASS = "HIT", "MISS", "PARTIAL", "BYPASS"


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """What the read-through path needs to know about one model's cache.

    ``model_version`` is the operator's pin. Empty, the cache follows the version the
    backend reports (see :mod:`caching.core.store`); set, only predictions reported
    under that version (as ``modelVersionId`` or ``deployedModelId``) are stored, and
    backends that report no version are cached under it as a plain label.
    """

    namespace: str
    model_name: str
    model_identity: str
    model_version: str
    ttl_seconds: int
    enabled: bool

    @property
    def follows_versions(self) -> bool:
        return not self.model_version

    def pin_admits(self, model_version_id: str | None, deployed_model_id: str | None) -> bool:
        """Whether a prediction reported under this version may be stored and served.

        A pin names a ``deployedModelId``, a ``modelVersionId`` or the full tag
        ``deployedModelId/modelVersionId``. Predictions reported without any version
        are admitted: for such backends the pin is only a label in the keys.
        """
        if self.follows_versions or (model_version_id is None and deployed_model_id is None):
            return True
        return self.model_version in (
            model_version_id,
            deployed_model_id,
            version_tag(model_version_id, deployed_model_id),
        )


@dataclass(frozen=True, slots=True)
class VersionChange:
    """An answer moved the cache from one deployed model version to another."""

    previous: str  # version tag followed before ("" if none)
    current: str
    model_version_id: str | None
    deployed_model_id: str | None


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
    version_change: VersionChange | None = None  # this request's answer moved the cache


def _tag(entry: CachedPrediction) -> str:
    return version_tag(entry.model_version_id, entry.deployed_model_id)


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
        distinct = list(first_index)
        try:
            lookup = self.store.lookup(spec.namespace, spec.model_version, distinct)
        except CacheUnavailable as exc:
            logger.warning("redis unavailable, serving %s from the backend: %s", spec.model_name, exc)
            return self._bypass(spec, backend, instances, parameters)

        found = self._usable_entries(spec, lookup, distinct)
        missing = [digest for digest in distinct if digest not in found]
        stored = False
        version_change = None
        if missing:
            fresh, stored, version_change = self._compute(
                spec, backend, lookup, missing, instances, first_index, parameters
            )
            found.update(fresh)
            if stored and spec.follows_versions:
                # The fresh answers are of the version the cache now follows. Hits of this same
                # request written by another version (this answer moved the cache, or another
                # process did since the lookup) are recomputed: one response, one version.
                current = _tag(fresh[missing[0]])
                stale = [d for d in distinct if d not in fresh and _tag(found[d]) != current]
                if stale:
                    refreshed, _, _ = self._compute(
                        spec, backend, lookup, stale, instances, first_index, parameters
                    )
                    found.update(refreshed)
                    missing += stale

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
            version_change=version_change,
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
            if entry.generation != lookup.generation:
                continue
            if spec.follows_versions and _tag(entry) != lookup.current_version:
                continue  # computed by a version the cache no longer follows
            if not spec.pin_admits(entry.model_version_id, entry.deployed_model_id):
                continue  # written before the pin was set, under the same label
            found[digest] = entry
        return found

    def _compute(
        self,
        spec: CacheSpec,
        backend: Backend,
        lookup: Lookup,
        digests: list[str],
        instances: Sequence[Any],
        first_index: dict[str, int],
        parameters: dict[str, Any] | None,
    ) -> tuple[dict[str, CachedPrediction], bool, VersionChange | None]:
        """Call the backend once for ``digests`` and store what may be stored.

        Returns the fresh entries, whether they were stored, and the version change
        their answer caused, if any.
        """
        positions = [first_index[d] for d in digests]
        result = self._call_backend(spec, backend, [instances[i] for i in positions], parameters, positions)
        now = self.clock()
        entries = {
            digest: CachedPrediction(
                prediction=prediction,
                generation=lookup.generation,
                created_at=now,
                model_version_id=result.model_version_id,
                deployed_model_id=result.deployed_model_id,
            )
            for digest, prediction in zip(digests, result.predictions, strict=True)
        }
        if not result.cacheable or not spec.pin_admits(result.model_version_id, result.deployed_model_id):
            self.stats.record(spec.namespace, not_stored=len(entries))
            return entries, False, None
        version = version_tag(result.model_version_id, result.deployed_model_id)
        try:
            outcome = self.store.save(
                spec.namespace,
                lookup,
                [(digest, encode(entry)) for digest, entry in entries.items()],
                ttl_seconds=spec.ttl_seconds,
                version=version,
                follow_versions=spec.follows_versions,
            )
        except CacheUnavailable as exc:
            logger.warning("could not store predictions of %s: %s", spec.model_name, exc)
            self.stats.record(spec.namespace, store_errors=1)
            return entries, False, None
        if outcome.status == SUPERSEDED:
            self.stats.record(spec.namespace, not_stored=len(entries))
            return entries, False, None
        if outcome.status == ADVANCED:
            logger.info(
                "%s now follows version %r (was %r)", spec.model_name, version, outcome.previous_version
            )
            self.stats.record(spec.namespace, version_changes=1)
            change = VersionChange(
                outcome.previous_version, version, result.model_version_id, result.deployed_model_id
            )
            return entries, True, change
        return entries, True, None

    def _call_backend(
        self,
        spec: CacheSpec,
        backend: Backend,
        instances: Sequence[Any],
        parameters: dict[str, Any] | None,
        positions: Sequence[int],
    ) -> BackendResult:
        """One backend call; ``positions[i]`` is where ``instances[i]`` sits in the client's request."""
        self.stats.record(spec.namespace, backend_calls=1, backend_instances=len(instances))
        try:
            return checked_result(backend.predict(instances, parameters), len(instances))
        except BackendRejectedInput as exc:
            if exc.instance is None or not 0 <= exc.instance < len(positions):
                raise
            # Number the instance as the client did, not as the backend saw it (misses only).
            raise BackendRejectedInput(f"instance {positions[exc.instance]}: {exc}") from exc

    def _bypass(
        self,
        spec: CacheSpec,
        backend: Backend,
        instances: Sequence[Any],
        parameters: dict[str, Any] | None,
    ) -> Prediction:
        result = self._call_backend(spec, backend, instances, parameters, range(len(instances)))
        self.stats.record(spec.namespace, requests=1, bypassed=len(instances))
        return Prediction(
            predictions=result.predictions,
            cache_status=BYPASS,
            hits=0,
            misses=len(instances),
            model_version_id=result.model_version_id,
            deployed_model_id=result.deployed_model_id,
        )
