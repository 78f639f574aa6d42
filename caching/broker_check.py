"""Start-up check of the Celery broker: a broker inside an evicting cache Redis can lose queued tasks."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings

from caching.core.store import REDIS_FAILURES, redis_client


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return (parts.hostname or "localhost", parts.port or 6379)


def broker_eviction_warning() -> str | None:
    """What to tell the operator if the broker lives in the cache's Redis and that Redis evicts keys.

    Eviction is per server, not per database: another database index on the same server is no
    shelter. None when the broker is elsewhere (RabbitMQ, another Redis) or its keys are never
    evicted (``noeviction``, or a ``volatile-*`` policy: those evict only keys with a TTL).
    """
    broker = settings.CELERY_BROKER_URL
    if not broker.startswith(("redis://", "rediss://")) or _address(broker) != _address(settings.REDIS_URL):
        return None
    client = redis_client(
        settings.REDIS_URL,
        socket_timeout=2,
        connect_timeout=2,
        password=settings.PREDCACHE_REDIS_PASSWORD,
        tls_ca_cert=settings.PREDCACHE_REDIS_CA_CERT,
        tls_check_hostname=settings.PREDCACHE_REDIS_TLS_CHECK_HOSTNAME,
    )
    try:
        policy = str(client.config_get("maxmemory-policy").get("maxmemory-policy", "unknown"))
    except REDIS_FAILURES:  # managed Redis may refuse CONFIG: say what cannot be checked
        policy = "unknown (CONFIG GET is not allowed)"
    finally:
        client.close()
    # volatile-* policies evict only keys with a TTL, and the broker's keys have none.
    if policy == "noeviction" or policy.startswith("volatile-"):
        return None
    host, port = _address(broker)
    return (
        f"the Celery broker is the cache's Redis ({host}:{port}), whose maxmemory-policy is {policy}: "
        "when it runs out of memory it may evict queued tasks. Give the broker a Redis of its own "
        "with maxmemory-policy noeviction, or RabbitMQ (CELERY_BROKER_URL)."
    )
