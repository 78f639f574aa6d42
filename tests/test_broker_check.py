"""The start-up warning when the Celery broker lives in a cache Redis that evicts keys."""

from __future__ import annotations

import pytest

from caching.broker_check import broker_eviction_warning
from predcache_site.local_redis import RedisServer


@pytest.fixture(scope="module")
def evicting_redis(tmp_path_factory):
    server = RedisServer(
        tmp_path_factory.mktemp("lru"), arguments=("--maxmemory-policy", "allkeys-lru")
    ).start()
    yield server.url
    server.stop()


def test_a_broker_in_an_evicting_cache_redis_is_warned_about(settings, evicting_redis):
    settings.REDIS_URL = evicting_redis
    settings.CELERY_BROKER_URL = evicting_redis.replace("/0", "/5")  # another database is no shelter
    warning = broker_eviction_warning()
    assert warning is not None
    assert "maxmemory-policy is allkeys-lru" in warning and "noeviction" in warning


@pytest.mark.parametrize("policy", ["noeviction", "volatile-lru"])
def test_policies_that_keep_the_brokers_keys_are_fine(settings, evicting_redis, policy):
    import redis

    client = redis.Redis.from_url(evicting_redis)
    client.config_set("maxmemory-policy", policy)
    try:
        settings.REDIS_URL = settings.CELERY_BROKER_URL = evicting_redis
        assert broker_eviction_warning() is None
    finally:
        client.config_set("maxmemory-policy", "allkeys-lru")


def test_a_broker_elsewhere_is_not_the_caches_business(settings, evicting_redis):
    settings.REDIS_URL = evicting_redis
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
    assert broker_eviction_warning() is None
