"""The prediction store: the protocol the read-through path uses, what it answers, the Redis client factory.

Two implementations pass one contract suite (tests/core/store_contract.py): the Redis store
(:mod:`caching.core.redis_store`, what every process uses) and an in-memory one
(:mod:`caching.core.memory_store`, for the read-through's unit tests and the seed of an
in-process tier).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.credentials import CredentialProvider
from redis.retry import Retry

from caching.core.cluster import LazyRedisCluster, RedisClient
from caching.core.errors import PredcacheError
from caching.core.sentinels import NoValue

# Every error redis-py raises: refused or dropped connections, timeouts, and error replies
# (out of memory, read-only replica after a failover, missing ACL permission, not Redis at
# all), and on a cluster its own that are not RedisErrors (no node reachable, no node serving
# a slot). The request path fails open on all of them.
REDIS_FAILURES: tuple[type[BaseException], ...] = (redis.RedisError, redis.exceptions.RedisClusterException)


class CacheUnavailable(PredcacheError):
    """The store could not serve the command: Redis unreachable, too slow, or answering with an error."""

    code = "cache_unavailable"


def redis_client(
    url: str,
    *,
    socket_timeout: float,
    connect_timeout: float,
    password: str = "",
    tls_ca_cert: str = "",
    tls_check_hostname: bool = True,
    cluster: bool = False,
    credential_provider: CredentialProvider | None = None,
) -> RedisClient:
    """The one Redis client factory: short timeouts and no hidden retries, so an outage fails fast.

    ``password`` (Memorystore's AUTH string) wins over a password in the URL; a
    ``credential_provider`` (IAM tokens: :mod:`caching.core.iam_auth`) wins over both and is
    asked on each new connection. A ``rediss://`` server's certificate must chain to
    ``tls_ca_cert`` (PEM text, or a PEM file's path) if given, else to the system's CAs; the
    host name is checked if ``tls_check_hostname``.

    With ``cluster``, ``url`` names any node of a Redis Cluster: the client (built on first
    use, :mod:`caching.core.cluster`) routes each command to the primary owning its slot and,
    after a connection error, reads the slot map again and retries once (a failover).
    """
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "health_check_interval": 0,
    }
    url_options: dict[str, Any] = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    if url_options.get("connection_class") is redis.SSLConnection:
        options.update(ssl_cert_reqs="required", ssl_check_hostname=tls_check_hostname)
        if tls_ca_cert:
            options["ssl_ca_data" if "-----BEGIN" in tls_ca_cert else "ssl_ca_certs"] = tls_ca_cert
    elif tls_ca_cert:
        raise ValueError("a CA certificate needs a rediss:// URL")
    options.update(url_options)  # as in Redis.from_url, the URL's query arguments win...
    if password:
        options["password"] = password  # ...but not over the AUTH string given apart
    if credential_provider is not None:
        options["credential_provider"] = credential_provider
        options.pop("username", None)
        options.pop("password", None)  # redis-py refuses a password beside a provider
    if cluster:
        return _cluster_client(options)
    options["retry"] = Retry(NoBackoff(), 0)
    client = redis.Redis(connection_pool=redis.ConnectionPool(**options))
    client.auto_close_connection_pool = True  # close() disconnects the pool, as from_url's clients do
    return client


def _cluster_client(options: dict[str, Any]) -> LazyRedisCluster:
    options.pop("connection_class", None)  # RedisCluster picks it from ``ssl``
    if options.pop("db", 0):
        raise ValueError("a Redis Cluster has only database 0: name no other in REDIS_URL")
    if "ssl_cert_reqs" in options:
        options["ssl"] = True
    host, port = options.pop("host", "localhost"), int(options.pop("port", 6379))

    def build() -> RedisCluster:
        return RedisCluster(host=host, port=port, retry=Retry(NoBackoff(), 1), **options)

    return LazyRedisCluster(build)


@dataclass(frozen=True, slots=True)
class LockRequest:
    """Asks a lookup to take, in the same round trip, the single-flight lock of each entry it
    finds missing or not servable: absent, of another generation (purged), of a version the
    cache no longer follows (when ``follow_versions``), or not fresh at ``now``. With
    ``every_entry`` (a ``no-cache`` request recomputes everything) it takes them all.

    This only saves a round trip: which entries are served is decided by
    :mod:`caching.core.freshness` on what the lookup read; a lock it did not take is taken after.
    """

    token: str
    ttl_seconds: float
    now: float
    follow_versions: bool
    every_entry: bool = False


# Not frozen, as CachedPrediction (caching/core/codec.py): built on every hit.
@dataclass(slots=True)
class Lookup:
    """What one lookup round trip found.

    An entry is served only if it carries ``generation``: the model's generation token joined
    with that of the model version. Purging swaps a token. A token missing from the store is
    replaced by a fresh random one that :meth:`PredictionStore.save` publishes (``SET NX``), so
    a lost generation key can never revive entries written before a purge.

    ``current_version`` is the version tag of the deployed model the cache follows (``""``
    when the backend never reported one), read in the same round trip. With a
    :class:`LockRequest`, ``locked`` holds the digests whose locks it took and ``held`` those
    whose locks another request holds.
    """

    generation: str
    new_generation_keys: tuple[tuple[str, str], ...]
    raw_values: Sequence[bytes | NoValue]
    current_version: str = ""
    locked: frozenset[str] = frozenset()
    held: frozenset[str] = frozenset()
    from_memory: bool = False  # answered by the in-process tier (caching.core.l1), no Redis command


# What a save did with the version it was given.
STORED, ADVANCED, SUPERSEDED = "stored", "advanced", "superseded"


@dataclass(frozen=True, slots=True)
class SaveOutcome:
    status: str  # STORED, ADVANCED (stored, and the cache now follows this version) or SUPERSEDED
    previous_version: str  # the version followed before the save
    stored: int = 0  # entries written (admission may hold some back)


@dataclass(frozen=True, slots=True)
class Fresh:
    """One encoded prediction to store, with its lifetime in the store."""

    digest: str
    value: bytes
    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class WaitingState:
    """What a request waiting on others' computations sees: locks still held, values handed off."""

    held: frozenset[str]
    handed: dict[str, bytes]


class PredictionStore(Protocol):
    """Encoded predictions per model namespace; invalidation is a generation swap.

    Every method raises :class:`CacheUnavailable` when the store cannot answer.
    """

    def lookup(
        self,
        namespace: str,
        model_version: str,
        digests: Sequence[str],
        *,
        locks: LockRequest | None = None,
        l1: bool = False,
    ) -> Lookup:
        """Both generations, the followed version and every entry, in one round trip (see LockRequest).

        With ``l1`` (the model has its in-process tier on), a store that has one may answer
        from it with no round trip (:mod:`caching.core.l1`); others ignore it.
        """
        ...

    def save(
        self,
        namespace: str,
        lookup: Lookup,
        entries: Sequence[Fresh],
        *,
        version: str = "",
        follow_versions: bool = False,
        admit_after: int = 1,
        admission_window: int = 3600,
        locks: Sequence[str] = (),
        lock_token: str = "",
        handoff_seconds: float = 10.0,
    ) -> SaveOutcome:
        """Write entries atomically and release this request's locks, in one round trip.

        With ``follow_versions``, ``version`` (the tag of the model that computed the values)
        decides whether they are stored and which version the cache follows: an answer from
        the followed version is stored; one from a version never seen makes the cache follow
        it (the old one is retired); one from a retired version is not stored (SUPERSEDED).
        With a ``lock_token``, an entry is stored only while its single-flight lock still
        holds that token (an instance purge deletes locks), and the locks are released;
        ``locks`` names further digests whose locks to release. With ``admit_after`` > 1 an
        entry is stored once its instance missed that often within ``admission_window``
        seconds; until then it is handed off for ``handoff_seconds`` to waiting requests.
        """
        ...

    def acquire(self, namespace: str, digests: Sequence[str], token: str, ttl_seconds: float) -> set[str]:
        """Take the single-flight lock of each digest that nobody holds; returns those taken."""
        ...

    def waiting_state(self, namespace: str, digests: Sequence[str]) -> WaitingState:
        """Which of these locks are still held, and the values handed off for them."""
        ...

    def release(self, namespace: str, digests: Sequence[str], token: str) -> None:
        """Give up locks this request holds (its computation failed), so waiters stop waiting."""
        ...

    def job_lock(
        self, namespace: str, job: str, token: str, ttl_seconds: float, *, take_over: str = ""
    ) -> bool:
        """Take the expiring lock of one background job (a warm, a purge), or one whose holder's
        token starts with ``take_over`` (the same task delivered again)."""
        ...

    def job_lock_held(self, namespace: str, job: str, token: str) -> bool:
        """Whether ``token`` still holds the job's lock."""
        ...

    def job_unlock(self, namespace: str, job: str, token: str) -> None:
        """Give a job lock back, only if this holder still has it."""
        ...

    def purge(self, namespace: str, model_version: str | None = None, *, keep_versions: bool = False) -> None:
        """Make every entry of the model (or of one version) unreachable at once; a whole-model
        purge also forgets the versions seen, unless ``keep_versions``."""
        ...

    def generation(self, namespace: str) -> str | None:
        """The current model-wide generation token, if there is one."""
        ...

    def followed_version(self, namespace: str) -> tuple[str, list[str]]:
        """The version tag the cache follows and the retired ones, sorted."""
        ...

    def delete_entries(self, namespace: str, digests: Sequence[str]) -> int:
        """Delete these entries and their locks (so a computation under way does not store them
        afterwards); returns how many entries existed."""
        ...

    def reclaim(self, namespace: str, is_live: Callable[[dict[str, Any]], bool], batch: int = 500) -> int:
        """Delete the entries whose header ``is_live`` rejects (undecodable ones are left to
        their TTL); returns how many were deleted."""
        ...

    def entry_headers(self, namespace: str, digests: Sequence[str]) -> list[dict[str, Any] | None]:
        """The header of each digest's entry (None: no entry, or undecodable); payloads are not read."""
        ...

    def close(self) -> None:
        """Release what the store holds itself (connections); it may be used again after."""
        ...


def new_generation_token() -> str:
    """A random generation token; random (not a counter) so a lost key cannot repeat an old one."""
    return secrets.token_hex(8)
