"""The contract every TokenBuckets passes: subclass BucketContract and give ``make_buckets``.

Time is the buckets' own (Redis's clock for the Redis buckets): refills are observed by polling
with a deadline at a fast rate, never by sleeping a fixed time.
"""

from __future__ import annotations

import time
import uuid

import pytest

from caching.core.ratelimit import Rate, TokenBuckets

FIVE_A_MINUTE = Rate(5, 60)


class BucketContract:
    """One suite for every implementation of the shared token buckets."""

    def make_buckets(self) -> TokenBuckets:
        raise NotImplementedError

    @pytest.fixture
    def prepared(self) -> None:
        """What ``make_buckets`` needs first (a subclass overrides it: a Redis server, say)."""

    @pytest.fixture(autouse=True)
    def _buckets(self, prepared: None) -> None:
        self.buckets = self.make_buckets()
        self.name = uuid.uuid4().hex[:8]

    def test_a_new_bucket_is_full_and_grants_no_more_than_it_holds(self):
        assert self.buckets.lease(self.name, FIVE_A_MINUTE, 3).granted == 3
        assert self.buckets.lease(self.name, FIVE_A_MINUTE, 3).granted == 2
        empty = self.buckets.lease(self.name, FIVE_A_MINUTE, 3)
        assert empty.granted == 0
        # A token comes back every 12 s; less has passed since the bucket was full.
        assert 11 < empty.wait_seconds <= 12

    def test_buckets_are_apart_by_name(self):
        assert self.buckets.lease(self.name, FIVE_A_MINUTE, 5).granted == 5
        assert self.buckets.lease(f"{self.name}-other", FIVE_A_MINUTE, 5).granted == 5
        assert self.buckets.lease(self.name, FIVE_A_MINUTE, 1).granted == 0

    def test_a_lowered_rate_caps_what_the_bucket_holds(self):
        assert self.buckets.lease(self.name, Rate(10, 60), 1).granted == 1  # 9 left
        assert self.buckets.lease(self.name, Rate(3, 60), 10).granted == 3

    def test_tokens_come_back_at_the_rate(self):
        rate = Rate(50, 1)  # a token every 20 ms
        assert self.buckets.lease(self.name, rate, 50).granted == 50
        empty = self.buckets.lease(self.name, rate, 1)
        assert empty.granted == 0
        assert 0 < empty.wait_seconds <= 0.02
        deadline = time.monotonic() + 5
        while self.buckets.lease(self.name, rate, 1).granted == 0:
            assert time.monotonic() < deadline, "no token came back"
