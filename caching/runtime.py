"""Everything one process keeps across requests, built once from settings and dropped in one place at a fork.

gunicorn workers and Celery's prefork children are forked: a child must not use its parent's
sockets, locks or threads. The runtime owns all of them (the Redis client, the backends with
their connection pools and clients, the memories of model settings and verified keys, the
rate limits' local budgets, the stats flusher and the background threads), and one at-fork
hook drops it in the child, which builds its own on first use.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings

from caching.backends import BuildContext
from caching.backends.base import Backend
from caching.backends.http import shared_connection_pools
from caching.core.breaker import BreakerRegistry, CircuitBreaker
from caching.core.breaker_report import BreakerReport
from caching.core.cluster import RedisClient
from caching.core.hotset import HotSampler
from caching.core.iam_auth import IamTokenCredentials
from caching.core.integrity import ValueKeys
from caching.core.keys import KeySpace
from caching.core.l1 import MemoryTier, NodeTrackings, TieredStore, Tracking, tracked_prefixes
from caching.core.memo import ExpiringMemo, OncePer
from caching.core.metrics_recorder import MetricsRecorder
from caching.core.ratelimit import RateLimiter
from caching.core.readthrough import ReadThroughCache
from caching.core.redis_buckets import RedisTokenBuckets
from caching.core.redis_store import RedisPredictionStore
from caching.core.store import PredictionStore, redis_client
from caching.installation import installation_id

logger = logging.getLogger(__name__)


class BackendCache:
    """Each model's backend, built once per configuration and kept while it describes its model.

    A model's new configuration replaces its old backend (with its connections and clients),
    so the cache holds one backend per model, however often the settings change.
    """

    def __init__(self, context: BuildContext) -> None:
        self.context = context
        self._lock = threading.Lock()
        self._backends: dict[Hashable, tuple[Hashable, Backend]] = {}

    def get(self, owner: Hashable, key: Hashable, build: Callable[[BuildContext], Backend]) -> Backend:
        """``owner``'s backend for configuration ``key``, built anew for a new key or an outdated backend."""
        held = self._backends.get(owner)
        if held is not None and held[0] == key and not held[1].outdated():
            return held[1]
        with self._lock:
            held = self._backends.get(owner)
            if held is None or held[0] != key or held[1].outdated():
                held = self._backends[owner] = (key, build(self.context))
            return held[1]

    def __len__(self) -> int:
        return len(self._backends)


class BackgroundJobs:
    """Background work of this process where no Celery worker runs: one job per key at a time.

    A job submitted while the same key's job runs is run once more after it, not twice at once.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="predcache-background")
        self._lock = threading.Condition()
        self._running: set[Hashable] = set()
        self._again: set[Hashable] = set()

    def submit(self, key: Hashable, job: Callable[[], None]) -> None:
        with self._lock:
            if key in self._running:
                self._again.add(key)
                return
            self._running.add(key)
        try:
            self._executor.submit(self._run, key, job)
        except RuntimeError:  # shutting down: the work is a nicety (entries expire by TTL)
            with self._lock:
                self._running.discard(key)
                self._lock.notify_all()

    def _run(self, key: Hashable, job: Callable[[], None]) -> None:
        while True:
            try:
                job()
            except Exception:  # background work must never take the process down
                logger.exception("background job %r failed", key)
            with self._lock:
                if key not in self._again:
                    self._running.discard(key)
                    self._lock.notify_all()
                    return
                self._again.discard(key)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job runs (a graceful stop, a test); False if one still runs at ``timeout``."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._running, timeout)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class Runtime:
    """Everything a web or worker process shares across requests."""

    client: RedisClient  # a Redis, or a Redis Cluster's client (caching/core/cluster.py)
    keyspace: KeySpace
    store: PredictionStore
    stats: MetricsRecorder  # the per-model counters (flushed to Redis) and the Prometheus metrics
    hot: HotSampler  # fresh hits sampled for refresh-ahead, flushed with the stats
    cache: ReadThroughCache
    http_pool: Any  # urllib3.PoolManager shared by the http backends
    backends: BackendCache
    served_models: ExpiringMemo[str, Any]  # model lookups (selectors), for PREDCACHE_CONFIG_CACHE_SECONDS
    verified_keys: ExpiringMemo[str, Any]  # API key checks (authentication)
    rate_limiter: RateLimiter  # the API keys' rate limits: local budgets leased from Redis
    api_key_uses: OncePer[str] | None  # when each key's last use was last written (None: never written)
    background: BackgroundJobs
    pid: int = field(default_factory=os.getpid)  # the process that built it
    stop_flusher: threading.Event = field(default_factory=threading.Event)  # and the metrics publisher

    def close(self) -> None:
        """Stop this process's threads, flush the counters, close connections."""
        self.stop_flusher.set()
        self.stats.publish()
        self.stats.flush(self.client, self.keyspace)
        self.background.shutdown()
        self.cache.shutdown()
        self.store.close()
        self.client.close()
        self.http_pool.clear()


_lock = threading.Lock()
_current: Runtime | None = None


def get_runtime() -> Runtime:
    """The runtime of this process, built on first use (and again in a forked child)."""
    current = _current
    if current is not None:
        return current
    with _lock:
        if _current is None:
            _install(_build())
        assert _current is not None
        return _current


def built_runtime() -> Runtime | None:
    """This process's runtime if it has one already (to forget things in it without building one)."""
    return _current


def reset_runtime() -> None:
    """Close the runtime (tests, settings changes); the next use builds a new one from settings."""
    global _current
    with _lock:
        if _current is not None:
            _current.close()
        _current = None


def _forget_in_child() -> None:
    """At a fork, in the child: drop the parent's runtime unclosed (its sockets are the parent's)."""
    global _current, _lock
    _current = None
    _lock = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_forget_in_child)


def _install(runtime: Runtime) -> None:
    global _current
    _current = runtime


def _tiered(store: PredictionStore, client: RedisClient, keyspace: KeySpace) -> TieredStore:
    """``store`` behind the in-process tier (idle, with no connection, until an l1 model is used).

    On one Redis the tier's pushes come on one tracking connection; on a cluster, on one per
    primary, each model's from the primary owning its slot.
    """
    tier = MemoryTier(
        max_entries=settings.PREDCACHE_L1_MAX_ENTRIES, max_bytes=settings.PREDCACHE_L1_MAX_BYTES
    )

    def tracking(pool: redis.ConnectionPool) -> Tracking:
        def connect() -> redis.Connection:
            # The pool's own settings (address, TLS, AUTH, timeouts), speaking RESP3 for the pushes.
            return pool.connection_class(**{**pool.connection_kwargs, "protocol": 3})  # type: ignore[no-any-return]

        return Tracking(
            connect,
            tracked_prefixes(keyspace),
            on_keys=tier.forget,
            on_reset=tier.clear,
            heartbeat_seconds=settings.PREDCACHE_L1_HEARTBEAT_SECONDS,
        )

    if isinstance(client, redis.Redis):
        return TieredStore(store, keyspace, tier, tracking(client.connection_pool))
    cluster = client

    def owner_of(namespace: str) -> str:
        return str(cluster.get_node_from_key(keyspace.generation(namespace)).name)

    def node_tracking(name: str) -> Tracking:
        return tracking(cluster.get_redis_connection(cluster.get_node(node_name=name)).connection_pool)

    return TieredStore(store, keyspace, tier, NodeTrackings(owner_of, node_tracking))


def _build() -> Runtime:
    client = redis_client(
        settings.REDIS_URL,
        socket_timeout=settings.PREDCACHE_REDIS_SOCKET_TIMEOUT,
        connect_timeout=settings.PREDCACHE_REDIS_CONNECT_TIMEOUT,
        password=settings.PREDCACHE_REDIS_PASSWORD,
        tls_ca_cert=settings.PREDCACHE_REDIS_CA_CERT,
        tls_check_hostname=settings.PREDCACHE_REDIS_TLS_CHECK_HOSTNAME,
        cluster=settings.PREDCACHE_REDIS_CLUSTER,
        # Memorystore's IAM authentication: a fresh access token on each new connection.
        credential_provider=IamTokenCredentials() if settings.PREDCACHE_REDIS_IAM_AUTH else None,
    )
    keyspace = KeySpace(settings.PREDCACHE_KEY_PREFIX, installation_id())
    store = _tiered(RedisPredictionStore(client, keyspace), client, keyspace)
    hot = HotSampler(
        one_in=settings.PREDCACHE_HOT_SAMPLE_RATE,
        half_life=settings.PREDCACHE_HOT_HALF_LIFE_SECONDS,
        capacity=settings.PREDCACHE_HOT_SET_SIZE,
    )

    def breakers() -> list[tuple[str, CircuitBreaker]]:
        # The cache's, read at each flush: a test may give the cache other breakers.
        return [*cache.backend_breakers.items(), (keyspace.all_models(), cache.redis_breaker)]

    # Breakers are per process: each reports those not closed with its counters (the dashboard).
    # Named by host, pid and a random part: containers may share a hostname and pids.
    breaker_report = BreakerReport(
        breakers,
        f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}",
        flush_interval=settings.PREDCACHE_STATS_FLUSH_SECONDS,
    )
    stats = MetricsRecorder(
        alongside=[hot, breaker_report],
        minutes_kept_seconds=int(settings.PREDCACHE_DASHBOARD_RETENTION_HOURS * 3600),
    )
    redis_breaker = CircuitBreaker(
        "redis",
        failure_threshold=settings.PREDCACHE_REDIS_BREAKER_FAILURES,
        reset_seconds=settings.PREDCACHE_REDIS_BREAKER_RESET_SECONDS,
        listener=stats.redis_breaker_listener,
    )
    backend_breakers = BreakerRegistry(
        failure_threshold=settings.PREDCACHE_BACKEND_BREAKER_FAILURES,
        reset_seconds=settings.PREDCACHE_BACKEND_BREAKER_RESET_SECONDS,
        listener=stats.backend_breaker_listener,
    )
    http_pool = shared_connection_pools()
    cache = ReadThroughCache(
        store,
        max_depth=settings.PREDCACHE_MAX_DEPTH,
        stats=stats,
        redis_breaker=redis_breaker,
        backend_breakers=backend_breakers,
        single_flight_wait=settings.PREDCACHE_SINGLE_FLIGHT_WAIT_SECONDS,
        hot=hot,
        value_keys=_value_keys(),
    )
    runtime = Runtime(
        client=client,
        keyspace=keyspace,
        store=store,
        stats=stats,
        hot=hot,
        cache=cache,
        http_pool=http_pool,
        backends=BackendCache(BuildContext(model_dir=settings.PREDCACHE_MODEL_DIR, http_pool=http_pool)),
        served_models=ExpiringMemo(settings.PREDCACHE_CONFIG_CACHE_SECONDS),
        verified_keys=ExpiringMemo(settings.PREDCACHE_API_KEY_CACHE_SECONDS),
        rate_limiter=RateLimiter(RedisTokenBuckets(client, keyspace), breaker=redis_breaker),
        api_key_uses=(
            OncePer(settings.PREDCACHE_API_KEY_LAST_USED_SECONDS)
            if settings.PREDCACHE_API_KEY_LAST_USED_SECONDS > 0
            else None
        ),
        background=BackgroundJobs(),
    )
    interval = settings.PREDCACHE_STATS_FLUSH_SECONDS
    if interval > 0:
        threading.Thread(
            target=_flush_stats_forever,
            args=(runtime, interval),
            name="predcache-stats",
            daemon=True,
        ).start()
    threading.Thread(
        target=_publish_metrics_forever,
        args=(runtime, settings.PREDCACHE_METRICS_PUBLISH_SECONDS),
        name="predcache-metrics",
        daemon=True,
    ).start()
    return runtime


def _value_keys() -> ValueKeys | None:
    """The HMAC keys of stored values (PREDCACHE_VALUE_HMAC_KEY and _OLD_KEY), None when unset."""
    key = settings.PREDCACHE_VALUE_HMAC_KEY
    if not key:
        return None
    return ValueKeys(key.encode(), settings.PREDCACHE_VALUE_HMAC_OLD_KEY.encode())


def flush_at_exit() -> None:
    """At exit, add this process's last counts to Redis (a child's runtime is its own, by the pid).

    Registered with atexit; a process that ends without running atexit (Celery's prefork
    children leave by ``os._exit``) calls it on its way out.
    """
    runtime = _current
    if runtime is not None and runtime.pid == os.getpid() and not runtime.stop_flusher.is_set():
        runtime.stats.publish()
        runtime.stats.flush(runtime.client, runtime.keyspace)


atexit.register(flush_at_exit)


def _flush_stats_forever(runtime: Runtime, interval: float) -> None:
    while not runtime.stop_flusher.wait(interval):
        try:
            if not runtime.stats.flush(runtime.client, runtime.keyspace):
                logger.debug("stats flush failed; counts kept for the next attempt")
        except Exception:  # the flusher must outlive any surprise; counts are best effort
            logger.exception("stats flush crashed; will try again")


def _publish_metrics_forever(runtime: Runtime, interval: float) -> None:
    """Write the requests tallied in process to the Prometheus files (no Redis: nothing to fail on)."""
    while not runtime.stop_flusher.wait(interval):
        try:
            runtime.stats.publish()
        except Exception:  # a full disk, say: the next round tries again, the process goes on
            logger.exception("publishing the metrics failed; will try again")
