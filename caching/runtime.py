"""Process-wide Redis client, store, read-through cache and stats flusher, built from settings."""

from __future__ import annotations

import atexit
import logging
import os
import threading
from dataclasses import dataclass

import redis
from django.conf import settings

from caching.core.breaker import BreakerRegistry, CircuitBreaker
from caching.core.keys import KeySpace
from caching.core.readthrough import ReadThroughCache
from caching.core.stats import StatsRecorder
from caching.core.store import PredictionStore, redis_client
from caching.installation import installation_id

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything a web or worker process shares across requests."""

    client: redis.Redis
    keyspace: KeySpace
    store: PredictionStore
    stats: StatsRecorder
    cache: ReadThroughCache
    pid: int
    stop_flusher: threading.Event


_lock = threading.Lock()
_current: Runtime | None = None


def get_runtime() -> Runtime:
    """The runtime of this process, built on first use (and again after a fork)."""
    current = _current
    if current is not None and current.pid == os.getpid():
        return current
    with _lock:
        if _current is None or _current.pid != os.getpid():
            _install(_build())
        assert _current is not None
        return _current


def reset_runtime() -> None:
    """Drop the runtime (tests, settings changes); the next use builds a new one from settings."""
    global _current
    with _lock:
        if _current is not None and _current.pid == os.getpid():
            _current.stop_flusher.set()
            _current.stats.flush(_current.client, _current.keyspace)
            _current.client.close()
        _current = None


def _install(runtime: Runtime) -> None:
    global _current
    _current = runtime


def _build() -> Runtime:
    client = redis_client(
        settings.REDIS_URL,
        socket_timeout=settings.PREDCACHE_REDIS_SOCKET_TIMEOUT,
        connect_timeout=settings.PREDCACHE_REDIS_CONNECT_TIMEOUT,
        password=settings.PREDCACHE_REDIS_PASSWORD,
        tls_ca_cert=settings.PREDCACHE_REDIS_CA_CERT,
        tls_check_hostname=settings.PREDCACHE_REDIS_TLS_CHECK_HOSTNAME,
    )
    keyspace = KeySpace(settings.PREDCACHE_KEY_PREFIX, installation_id())
    store = PredictionStore(client, keyspace)
    stats = StatsRecorder()
    runtime = Runtime(
        client=client,
        keyspace=keyspace,
        store=store,
        stats=stats,
        cache=ReadThroughCache(
            store,
            max_depth=settings.PREDCACHE_MAX_DEPTH,
            stats=stats,
            redis_breaker=CircuitBreaker(
                "redis",
                failure_threshold=settings.PREDCACHE_REDIS_BREAKER_FAILURES,
                reset_seconds=settings.PREDCACHE_REDIS_BREAKER_RESET_SECONDS,
            ),
            backend_breakers=BreakerRegistry(
                failure_threshold=settings.PREDCACHE_BACKEND_BREAKER_FAILURES,
                reset_seconds=settings.PREDCACHE_BACKEND_BREAKER_RESET_SECONDS,
            ),
            single_flight_wait=settings.PREDCACHE_SINGLE_FLIGHT_WAIT_SECONDS,
        ),
        pid=os.getpid(),
        stop_flusher=threading.Event(),
    )
    from caching.services import background_version_change_record  # services import this module

    runtime.cache.version_listener = background_version_change_record
    atexit.register(_flush_at_exit, runtime)
    interval = settings.PREDCACHE_STATS_FLUSH_SECONDS
    if interval > 0:
        threading.Thread(
            target=_flush_stats_forever,
            args=(runtime, interval),
            name="predcache-stats",
            daemon=True,
        ).start()
    return runtime


def _flush_at_exit(runtime: Runtime) -> None:
    if runtime.pid == os.getpid() and not runtime.stop_flusher.is_set():
        runtime.stats.flush(runtime.client, runtime.keyspace)


def _flush_stats_forever(runtime: Runtime, interval: float) -> None:
    while not runtime.stop_flusher.wait(interval):
        try:
            if not runtime.stats.flush(runtime.client, runtime.keyspace):
                logger.debug("stats flush failed; counts kept for the next attempt")
        except Exception:  # the flusher must outlive any surprise; counts are best effort
            logger.exception("stats flush crashed; will try again")
