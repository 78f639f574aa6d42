"""Writing computed predictions: encoded, size-checked, saved with the version rules in one round trip."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from caching.backends.base import BackendResult
from caching.core.codec import CachedPrediction, encode
from caching.core.guard import StoreGuard
from caching.core.integrity import ValueKeys
from caching.core.keys import version_tag
from caching.core.sentinels import NoValue
from caching.core.spec import CacheSpec, VersionChange
from caching.core.stats import StatsRecorder
from caching.core.store import ADVANCED, SUPERSEDED, Fresh, Lookup, PredictionStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Written:
    """What a write did: anything stored, the version change it caused, and whether the answer
    came from the version the cache follows (so the rest of the response must be of it too)."""

    stored: bool = False
    change: VersionChange | None = None
    current: bool = False


NOTHING_WRITTEN = Written()


def fresh_values(
    spec: CacheSpec,
    entries: Mapping[str, CachedPrediction],
    stats: StatsRecorder,
    keys: ValueKeys | None = None,
) -> list[Fresh]:
    """The encoded entries to store (tagged with ``keys``), each kept through its stale windows;
    too large ones left out."""
    keep = spec.stale_while_revalidate + spec.stale_if_error
    fresh: list[Fresh] = []
    for digest, entry in entries.items():
        value = encode(
            entry,
            compress_over=spec.compress_over,
            compression=spec.compression,
            keys=keys,
            namespace=spec.namespace,
            digest=digest,
        )
        if spec.max_entry_bytes is not None and len(value) > spec.max_entry_bytes:
            stats.record(spec.namespace, too_large=1)
            continue
        fresh_for = (entry.fresh_until or entry.created_at) - entry.created_at
        fresh.append(Fresh(digest, value, max(1, math.ceil(fresh_for + keep))))
    return fresh


def write_entries(
    *,
    store: PredictionStore,
    guard: StoreGuard,
    stats: StatsRecorder,
    spec: CacheSpec,
    lookup: Lookup,
    entries: Mapping[str, CachedPrediction],
    result: BackendResult,
    token: str,
    release: Sequence[str] = (),
    handoff_seconds: float,
    keys: ValueKeys | None = None,
) -> Written:
    """Save ``entries`` (computed as ``result``) and release this request's locks, in one round trip.

    ``release`` names further digests whose locks (taken with ``token``) to give back. With
    ``keys``, every value (stored, or handed off to waiters) carries its HMAC tag.
    """
    storable = result.cacheable and spec.pin_admits(result.model_version_id, result.deployed_model_id)
    fresh = fresh_values(spec, entries, stats, keys) if storable else []
    if len(fresh) < len(entries):
        stats.record(spec.namespace, not_stored=len(entries) - len(fresh))
    if not storable or (not fresh and not token):
        if token:
            guard(lambda: store.release(spec.namespace, [*entries, *release], token))
        return NOTHING_WRITTEN
    version = version_tag(result.model_version_id, result.deployed_model_id)
    kept = {f.digest for f in fresh}
    outcome = guard(
        lambda: store.save(
            spec.namespace,
            lookup,
            fresh,
            version=version,
            follow_versions=spec.follows_versions,
            admit_after=spec.admit_after,
            admission_window=max(spec.ttl_seconds, 60),
            lock_token=token,
            # Entries held back (too large) still hold locks: release those too.
            locks=[*(d for d in entries if d not in kept), *release] if token else (),
            handoff_seconds=handoff_seconds,
        )
    )
    if isinstance(outcome, NoValue):
        logger.warning("could not store predictions of %s", spec.model_name)
        stats.record(spec.namespace, store_errors=1)
        return NOTHING_WRITTEN
    if outcome.status == SUPERSEDED:
        stats.record(spec.namespace, not_stored=len(fresh))
        return NOTHING_WRITTEN
    if outcome.stored < len(fresh):
        stats.record(spec.namespace, not_admitted=len(fresh) - outcome.stored)
    if outcome.status != ADVANCED:
        return Written(stored=outcome.stored > 0, current=True)
    logger.info("%s now follows version %r (was %r)", spec.model_name, version, outcome.previous_version)
    stats.record(spec.namespace, version_changes=1)
    change = VersionChange(
        outcome.previous_version, version, result.model_version_id, result.deployed_model_id
    )
    return Written(stored=outcome.stored > 0, change=change, current=True)
