"""What the read-through cache is told (a model's cache spec, a request's directives) and
what it answers (a prediction with how the cache took part). Plain data, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from caching.core.canonical import KeyRules
from caching.core.codec import CachedPrediction
from caching.core.errors import PredcacheError
from caching.core.keys import version_tag

HIT, MISS, PARTIAL, STALE, BYPASS = "HIT", "MISS", "PARTIAL", "STALE", "BYPASS"
CACHE, PASS_THROUGH, DISABLED = "cache", "bypass", "disabled"


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
    mode: str = CACHE
    ttl_jitter: float = 0.0
    stale_while_revalidate: int = 0
    stale_if_error: int = 0
    key_rules: KeyRules = field(default_factory=KeyRules)
    admit_after: int = 1
    max_entry_bytes: int | None = None
    compress_over: int | None = 4096
    compression: str = "zlib"
    max_age: int | None = None
    backend_timeout: float = 30.0
    model_id: int = 0  # the database row, for what is recorded about the model
    l1: bool = False  # the in-process tier answers what it holds (caching.core.l1)

    @property
    def follows_versions(self) -> bool:
        return not self.model_version

    def pin_admits(self, model_version_id: str | None, deployed_model_id: str | None) -> bool:
        """Whether a prediction reported under this version may be stored and served (see pin_admits)."""
        return pin_admits(self.model_version, model_version_id, deployed_model_id)


def pin_admits(pin: str, model_version_id: str | None, deployed_model_id: str | None) -> bool:
    """Whether a prediction reported under this version may be stored and served under ``pin``.

    No pin (``""``): the cache follows versions instead, any is admitted. A pin names a
    ``deployedModelId``, a ``modelVersionId`` or the full tag ``deployedModelId/modelVersionId``.
    Predictions reported without any version are admitted: for such backends the pin is only
    a label in the keys.
    """
    if not pin or (model_version_id is None and deployed_model_id is None):
        return True
    return pin in (model_version_id, deployed_model_id, version_tag(model_version_id, deployed_model_id))


@dataclass(frozen=True, slots=True)
class Directives:
    """A request's ``Cache-Control`` directives (RFC 9111 request semantics)."""

    no_cache: bool = False  # recompute, and store the result
    no_store: bool = False  # recompute, store nothing
    max_age: int | None = None  # accept only entries younger than this
    only_if_cached: bool = False  # answer from the cache or not at all
    min_fresh: int | None = None  # accept only entries still fresh for at least this long

    def fresh_enough(self, entry: CachedPrediction, now: float, max_age: int | None = None) -> bool:
        """Whether ``entry`` stays servable for ``min_fresh`` more seconds (if asked).

        Servable until its freshness ends, or until the model's ``max_age`` rule retires it,
        whichever comes first. An entry with no freshness limit (written before entries carried
        one) is fresh for as long as Redis keeps it, not known here: only ``max_age`` bounds it.
        """
        if self.min_fresh is None:
            return True
        limits = [entry.fresh_until] if entry.fresh_until is not None else []
        if max_age is not None:
            limits.append(entry.created_at + max_age)
        return not limits or min(limits) - now >= self.min_fresh


NO_DIRECTIVES = Directives()


class NotCached(PredcacheError):
    """``only-if-cached`` and some instance has no usable entry."""

    code = "not_cached"

    @property
    def message(self) -> str:
        return f"only-if-cached: {self}"


@dataclass(frozen=True, slots=True)
class VersionChange:
    """An answer moved the cache from one deployed model version to another."""

    previous: str  # version tag followed before ("" if none)
    current: str
    model_version_id: str | None
    deployed_model_id: str | None


# Not frozen, as CachedPrediction (caching/core/codec.py): built on every hit.
@dataclass(slots=True)
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
    age: int | None = None  # seconds since the oldest cached prediction served was computed
    stale: int = 0  # of the hits, instances answered with a stale entry
    l1: bool = False  # answered by the in-process tier, with no Redis command


def tag_of(entry: CachedPrediction) -> str:
    """The version tag of the deployed model that computed ``entry``."""
    return version_tag(entry.model_version_id, entry.deployed_model_id)


def common(values: Sequence[str | None]) -> str | None:
    """The value all of ``values`` share, or None when they differ (or there are none)."""
    first = values[0] if values else None
    return first if all(value == first for value in values) else None
