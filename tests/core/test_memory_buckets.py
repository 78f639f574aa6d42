"""The in-memory token buckets pass the bucket contract (the Redis ones: tests/test_redis_buckets.py)."""

from __future__ import annotations

from caching.core.ratelimit import MemoryTokenBuckets, TokenBuckets
from tests.core.bucket_contract import BucketContract


class TestMemoryBuckets(BucketContract):
    def make_buckets(self) -> TokenBuckets:
        return MemoryTokenBuckets()
