"""The Redis token buckets pass the bucket contract on the test session's real Redis, one slot per key."""

from __future__ import annotations

import pytest
import redis

from caching.core.keys import KeySpace
from caching.core.ratelimit import Rate, TokenBuckets
from caching.core.redis_buckets import RedisTokenBuckets
from caching.core.store import CacheUnavailable, redis_client
from tests.conftest import SESSION_PREFIX
from tests.core.bucket_contract import BucketContract
from tests.support.processes import free_port

KEYSPACE = KeySpace(SESSION_PREFIX, "tests")  # deleted with the session's keys on a borrowed Redis


class TestRedisBuckets(BucketContract):
    @pytest.fixture
    def prepared(self, redis_url: str) -> None:
        self.url = redis_url

    def make_buckets(self) -> TokenBuckets:
        return RedisTokenBuckets(redis_client(self.url, socket_timeout=2, connect_timeout=2), KEYSPACE)


def test_a_bucket_is_one_key_under_the_installation_prefix_kept_until_it_would_be_full(redis_url):
    client = redis.Redis.from_url(redis_url)
    buckets = RedisTokenBuckets(redis_client(redis_url, socket_timeout=2, connect_timeout=2), KEYSPACE)
    buckets.lease("abcd1234", Rate(5, 60), 2)

    key = KEYSPACE.rate_bucket("abcd1234")
    assert key == f"{SESSION_PREFIX}{{tests.k.abcd1234}}:rate"
    tokens = float(client.hget(key, "tokens"))
    assert 3 <= tokens < 3.01
    # Two tokens short: full again in 24 s, and forgotten then (an absent bucket is a full one).
    assert 23_000 < client.pttl(key) <= 24_000


def test_an_unreachable_redis_is_cache_unavailable():
    client = redis_client(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2, connect_timeout=0.2)
    with pytest.raises(CacheUnavailable):
        RedisTokenBuckets(client, KEYSPACE).lease("abcd1234", Rate(5, 60), 1)
