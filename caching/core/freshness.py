"""Which looked-up entries a request may serve: one pure classification, used by every reader.

The request path, the refresh-ahead sweep and reclaim's liveness all judge an entry here, on
its decoded value or on its header alone: of the generation served (not purged), of the
version the cache follows or is pinned to, then by age against the model's rules and the
request's ``Cache-Control`` directives.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from caching.core.codec import CachedPrediction, CodecError, IntegrityError, decode
from caching.core.keys import version_tag
from caching.core.sentinels import NoValue
from caching.core.spec import NO_DIRECTIVES, CacheSpec, Directives, pin_admits


class Verdict(enum.Enum):
    """What a request does with one looked-up entry."""

    FRESH = "fresh"  # served as it is
    REVALIDATE = "stale-while-revalidate"  # served, and refreshed in the background
    FALLBACK = "stale-if-error"  # computed again; served only if the model fails
    PURGED = "purged"  # of another generation
    OTHER_VERSION = "other version"  # of a version the cache no longer follows, or not the pin's
    TOO_OLD = "too old"  # past the model's max age, or older than the request accepts
    NOT_FRESH_ENOUGH = "not fresh enough"  # fresh for less than the request's min-fresh
    EXPIRED = "expired"  # past every stale window

    @property
    def served(self) -> bool:
        return self is Verdict.FRESH or self is Verdict.REVALIDATE


# Not frozen, as CachedPrediction (caching/core/codec.py): built on every hit.
@dataclass(slots=True)
class ServedState:
    """What the store says the cache serves now (read in the lookup's round trip)."""

    generation: str
    current_version: str  # the followed version's tag; "" when none was reported


def identity(
    *,
    generation: object,
    model_version_id: str | None,
    deployed_model_id: str | None,
    pin: str,
    state: ServedState,
) -> Verdict | None:
    """PURGED or OTHER_VERSION for an entry the cache no longer serves whatever its age; else None."""
    if generation != state.generation:
        return Verdict.PURGED
    if not pin:
        if version_tag(model_version_id, deployed_model_id) == state.current_version:
            return None
        return Verdict.OTHER_VERSION
    return None if pin_admits(pin, model_version_id, deployed_model_id) else Verdict.OTHER_VERSION


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def header_servable(header: Mapping[str, Any], *, pin: str, state: ServedState) -> bool:
    """Whether some request could still serve the entry of this header (reclaim, refresh-ahead)."""
    return (
        identity(
            generation=header.get("g"),
            model_version_id=_text(header.get("v")),
            deployed_model_id=_text(header.get("d")),
            pin=pin,
            state=state,
        )
        is None
    )


def needs_lock(
    header: Mapping[str, Any] | None, *, state: ServedState, follow_versions: bool, now: float
) -> bool:
    """Whether a lookup asked to lock what it must compute locks this entry (see LockRequest).

    Absent or undecodable, purged, of another version (when following), or not fresh at ``now``.
    The Redis store's lookup script applies the same rule in Lua; the store contract suite
    holds the two together.
    """
    if header is None or header.get("g") != state.generation:
        return True
    if (
        follow_versions
        and version_tag(_text(header.get("v")), _text(header.get("d"))) != state.current_version
    ):
        return True
    fresh_until = header.get("x")
    return isinstance(fresh_until, int | float) and fresh_until <= now


def classify(
    entry: CachedPrediction,
    *,
    spec: CacheSpec,
    state: ServedState,
    now: float,
    directives: Directives = NO_DIRECTIVES,
) -> Verdict:
    """What a request with ``directives`` does with ``entry`` at ``now``."""
    unserved = identity(
        generation=entry.generation,
        model_version_id=entry.model_version_id,
        deployed_model_id=entry.deployed_model_id,
        pin=spec.model_version,
        state=state,
    )
    if unserved is not None:
        return unserved
    age = now - entry.created_at
    if spec.max_age is not None and age > spec.max_age:
        return Verdict.TOO_OLD  # the model's invalidation rule: never served past this age
    if directives.no_cache or (directives.max_age is not None and age > directives.max_age):
        return Verdict.TOO_OLD  # the client asked for a newer answer
    if directives.min_fresh is not None and not directives.fresh_enough(entry, now, spec.max_age):
        return Verdict.NOT_FRESH_ENOUGH  # it expires too soon (or has): computed again now
    fresh_until = entry.fresh_until
    if fresh_until is None or now < fresh_until:
        return Verdict.FRESH
    overdue = now - fresh_until
    if overdue <= spec.stale_while_revalidate:
        return Verdict.REVALIDATE
    if overdue <= spec.stale_if_error:
        return Verdict.FALLBACK
    return Verdict.EXPIRED


# Not frozen, as CachedPrediction (caching/core/codec.py): built on every hit.
@dataclass(slots=True)
class Sorted:
    """A lookup's entries sorted by what the request does with them (digests in lookup order)."""

    fresh: dict[str, CachedPrediction]
    revalidate: dict[str, CachedPrediction]  # served now, refreshed in the background
    fallback: dict[str, CachedPrediction]  # to compute; served if the model fails
    missing: tuple[str, ...]  # everything to compute (fallbacks included)
    undecodable: tuple[str, ...]
    forged: tuple[str, ...] = ()  # their HMAC tag did not verify (missing too)


def _decode(namespace: str, digest: str, raw: bytes) -> CachedPrediction:
    return decode(raw)


def sort_entries(
    digests: Iterable[str],
    raw_values: Iterable[bytes | NoValue],
    *,
    spec: CacheSpec,
    state: ServedState,
    now: float,
    directives: Directives = NO_DIRECTIVES,
    decode_entry: Callable[[str, str, bytes], CachedPrediction] = _decode,
) -> Sorted:
    """Classify every looked-up entry of a request (``decode_entry(namespace, digest, raw)`` reads
    each value, and checks its tag)."""
    fresh: dict[str, CachedPrediction] = {}
    revalidate: dict[str, CachedPrediction] = {}
    fallback: dict[str, CachedPrediction] = {}
    missing: list[str] = []
    undecodable: list[str] = []
    forged: list[str] = []
    namespace = spec.namespace
    for digest, raw in zip(digests, raw_values, strict=True):
        if isinstance(raw, NoValue):
            missing.append(digest)
            continue
        try:
            entry = decode_entry(namespace, digest, raw)
        except IntegrityError:
            missing.append(digest)
            forged.append(digest)
            continue
        except CodecError:
            missing.append(digest)
            undecodable.append(digest)
            continue
        verdict = classify(entry, spec=spec, state=state, now=now, directives=directives)
        if verdict is Verdict.FRESH:
            fresh[digest] = entry
        elif verdict is Verdict.REVALIDATE:
            revalidate[digest] = entry
        else:
            missing.append(digest)
            if verdict is Verdict.FALLBACK:
                fallback[digest] = entry
    return Sorted(fresh, revalidate, fallback, tuple(missing), tuple(undecodable), tuple(forged))
