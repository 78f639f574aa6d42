"""The one place that builds cache keys: instance digests and the Redis key names around them."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable

# Bump when anything that feeds a digest changes meaning; old entries then simply miss.
KEY_FORMAT_VERSION = b"pc1"
DIGEST_BYTES = 16  # blake2b-128: collisions are out of reach, unlike a 64-bit hash


def request_context(*, model_identity: str, model_version: str, canonical_parameters: bytes) -> bytes:
    """The part of every key shared by all instances of one request.

    ``model_identity`` names the model and what computes it (name, backend kind
    and target), so re-pointing a model at another server starts a fresh cache.
    """
    return b"\x00".join(
        (KEY_FORMAT_VERSION, model_identity.encode(), model_version.encode(), canonical_parameters)
    )


def version_tag(model_version_id: str | None, deployed_model_id: str | None) -> str:
    """One string naming the deployed model that computed a prediction; ``""`` if unknown."""
    if model_version_id is None and deployed_model_id is None:
        return ""
    return f"{deployed_model_id or ''}/{model_version_id or ''}"


def instance_digest(context: bytes, canonical_instance: bytes) -> str:
    """Hex digest identifying one instance's prediction under ``context``."""
    hasher = _context_hasher(context)
    hasher.update(canonical_instance)
    return hasher.hexdigest()


def instance_digests(context: bytes, canonical_instances: Iterable[bytes]) -> list[str]:
    """:func:`instance_digest` of each instance, the shared context hashed once (per process if short)."""
    if len(context) <= _REMEMBERED_CONTEXT_BYTES:
        shared = _remembered_context_hasher(context)
    else:
        shared = _context_hasher(context)
    digests = []
    for canonical_instance in canonical_instances:
        hasher = shared.copy()
        hasher.update(canonical_instance)
        digests.append(hasher.hexdigest())
    return digests


def _context_hasher(context: bytes) -> hashlib.blake2b:
    """A hasher fed ``context`` and its separator, copied for each instance (never updated itself)."""
    shared = hashlib.blake2b(context, digest_size=DIGEST_BYTES)
    shared.update(b"\x00")
    return shared


# Most requests of a model share one context (no parameters, or the same ones): a hit then
# spares creating and feeding a hasher. Only short contexts are kept, since clients choose the
# parameters: at most 1,024 of 1 KiB each per process; others are hashed anew.
_REMEMBERED_CONTEXT_BYTES = 1024
_remembered_context_hasher = functools.lru_cache(maxsize=1024)(_context_hasher)


class KeySpace:
    """Redis key names for one installation, under a deployment prefix.

    Every key of a model carries the hash tag ``{<installation>.m<id>}``: the installation
    id keeps two installations sharing one Redis (staging and production, two demos) apart
    although their database ids coincide, and on Redis Cluster a model's entries and its
    generation live in one slot, so a whole lookup stays one round trip.
    """

    def __init__(self, prefix: str, installation: str) -> None:
        if not installation or any(char in installation for char in "{}:."):
            raise ValueError(f"invalid installation id {installation!r}")
        self.prefix = prefix
        self.installation = installation

    def namespace(self, model_id: int) -> str:
        return f"{self.prefix}{{{self.installation}.m{model_id}}}"

    def generation(self, namespace: str) -> str:
        return f"{namespace}:gen"

    def version_generation(self, namespace: str, model_version: str) -> str:
        # Versions are operator- or backend-supplied text: hash them into a safe, bounded name.
        digest = hashlib.blake2b(model_version.encode(), digest_size=DIGEST_BYTES).hexdigest()
        return f"{namespace}:gen:v:{digest}"

    def followed_version(self, namespace: str) -> str:
        """The version tag of the deployed model whose predictions the cache serves."""
        return f"{namespace}:ver"

    def retired_versions(self, namespace: str) -> str:
        """A set of version tags the cache followed before; their answers are not stored."""
        return f"{namespace}:ver:retired"

    def lock(self, namespace: str, digest: str) -> str:
        """Held (with a random token, expiring) by the one request computing this instance."""
        return f"{namespace}:l:{digest}"

    def admission(self, namespace: str, digest: str) -> str:
        """How many times an instance was requested before it is admitted to the cache."""
        return f"{namespace}:a:{digest}"

    def handoff(self, namespace: str, digest: str) -> str:
        """A computed prediction that was not stored (not yet admitted), kept briefly for waiters."""
        return f"{namespace}:h:{digest}"

    def job(self, namespace: str, job: str) -> str:
        """Held (with a random token, expiring) while one background job of the model runs."""
        return f"{namespace}:job:{job}"

    def entry(self, namespace: str, digest: str) -> str:
        return f"{namespace}:e:{digest}"

    def stats(self, namespace: str) -> str:
        return f"{namespace}:stats"

    def all_models(self) -> str:
        """A namespace holding what is summed over every model (the dashboard's totals)."""
        return f"{self.prefix}{{{self.installation}.all}}"

    def minute_stats(self, namespace: str, minute: int) -> str:
        """A hash of the counters added in one minute (``minute``: Unix seconds // 60), kept a while."""
        return f"{namespace}:stats:m:{minute}"

    def breakers(self, namespace: str) -> str:
        """A hash: each process whose backend breaker of the model is not closed to its state."""
        return f"{namespace}:breakers"

    def usage(self, namespace: str) -> str:
        """A hash: the model's last measured entry count and memory (the dashboard's)."""
        return f"{namespace}:usage"

    def hot(self, namespace: str) -> str:
        """A sorted set of the model's most requested digests, by decayed sample count."""
        return f"{namespace}:hot"

    def hot_instances(self, namespace: str) -> str:
        """A hash: each digest of :meth:`hot` to the instance and parameters that make it (JSON)."""
        return f"{namespace}:hot:i"

    def rate_bucket(self, api_key: str) -> str:
        """A hash: the token bucket of an API key's rate limit (``api_key``: the key's public prefix).

        The key alone in its hash tag, so the lease script touches one slot on Redis Cluster.
        """
        return f"{self.prefix}{{{self.installation}.k.{api_key}}}:rate"
