"""The rate limiter over in-memory buckets and a fake clock: limits, slices, local refusals, fail-open."""

from __future__ import annotations

import pytest

from caching.core.breaker import CircuitBreaker
from caching.core.ratelimit import Lease, MemoryTokenBuckets, Rate, RateLimited, RateLimiter
from caching.core.store import CacheUnavailable


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountedBuckets:
    """Buckets that count the leases asked of them (the round trips a Redis would see)."""

    def __init__(self, buckets: MemoryTokenBuckets) -> None:
        self.buckets = buckets
        self.leases: list[int] = []  # the tokens asked for, lease by lease

    def lease(self, name: str, rate: Rate, want: int) -> Lease:
        self.leases.append(want)
        return self.buckets.lease(name, rate, want)


class DownBuckets:
    def __init__(self) -> None:
        self.calls = 0

    def lease(self, name: str, rate: Rate, want: int) -> Lease:
        self.calls += 1
        raise CacheUnavailable("Connection refused")


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def buckets(clock):
    return CountedBuckets(MemoryTokenBuckets(clock))


def limiter(buckets, clock) -> RateLimiter:
    breaker = CircuitBreaker("redis", failure_threshold=3, reset_seconds=5.0, clock=clock)
    return RateLimiter(buckets, breaker=breaker, clock=clock)


def admitted(limiter: RateLimiter, name: str, rate: Rate, times: int) -> int:
    """How many of ``times`` requests in a row were admitted."""
    count = 0
    for _ in range(times):
        try:
            limiter.admit(name, rate)
        except RateLimited:
            continue
        count += 1
    return count


@pytest.mark.parametrize("text,rate", [("5/m", Rate(5, 60)), ("100/s", Rate(100, 1)), (" 1/s ", Rate(1, 1))])
def test_a_rate_is_read_as_written(text, rate):
    assert Rate.parse(text) == rate
    assert str(rate) == text.strip()


@pytest.mark.parametrize("text", ["0/m", "5", "5/h", "-1/s", "1.5/s", "5/min", "/s", "1000000000/s"])
def test_anything_else_is_not_a_rate(text):
    with pytest.raises(ValueError, match="N/s or N/m"):
        Rate.parse(text)


def test_n_are_admitted_then_refused_with_the_seconds_until_a_token_is_back(buckets, clock):
    rate = Rate(5, 60)
    limits = limiter(buckets, clock)
    assert admitted(limits, "key", rate, 5) == 5
    with pytest.raises(RateLimited) as refused:
        limits.admit("key", rate)
    assert refused.value.status == 429
    assert refused.value.retry_after == 12  # a token back every 12 s
    assert refused.value.headers == {"Retry-After": "12"}
    assert refused.value.message == "rate limit of this API key exceeded (5/m): retry after 12 s"

    clock.advance(12)
    assert admitted(limits, "key", rate, 2) == 1


def test_retry_after_is_whole_seconds_and_at_least_one(buckets, clock):
    limits = limiter(buckets, clock)
    rate = Rate(50, 1)  # a token back every 20 ms
    assert admitted(limits, "key", rate, 50) == 50
    with pytest.raises(RateLimited) as refused:
        limits.admit("key", rate)
    assert refused.value.retry_after == 1


def test_processes_share_the_limit(buckets, clock):
    """Two limiters on one set of buckets, as two processes on one Redis."""
    rate = Rate(5, 60)
    first, second = limiter(buckets, clock), limiter(buckets, clock)
    assert admitted(first, "key", rate, 3) + admitted(second, "key", rate, 3) == 5
    assert admitted(first, "key", rate, 1) + admitted(second, "key", rate, 1) == 0


def test_a_busy_key_leases_a_twentieth_of_its_limit_at_a_time(buckets, clock):
    rate = Rate(1000, 1)
    limits = limiter(buckets, clock)
    assert admitted(limits, "key", rate, 1000) == 1000
    assert buckets.leases == [50] * 20  # one lease (one Redis round trip) per 50 requests


def test_a_small_limit_leases_one_token_at_a_time(buckets, clock):
    limits = limiter(buckets, clock)
    assert admitted(limits, "key", Rate(39, 60), 39) == 39
    assert buckets.leases == [1] * 39


def test_a_refused_key_is_refused_here_until_its_bucket_has_a_token_again(buckets, clock):
    rate = Rate(5, 60)
    limits = limiter(buckets, clock)
    assert admitted(limits, "key", rate, 5) == 5
    assert admitted(limits, "key", rate, 1) == 0
    asked = len(buckets.leases)

    clock.advance(11.9)
    with pytest.raises(RateLimited) as refused:
        limits.admit("key", rate)
    assert refused.value.retry_after == 1
    assert len(buckets.leases) == asked  # refused without asking the buckets

    clock.advance(0.1)
    limits.admit("key", rate)
    assert len(buckets.leases) == asked + 1


def test_a_changed_rate_applies_at_once_not_after_the_tokens_held(buckets, clock):
    limits = limiter(buckets, clock)
    limits.admit("key", Rate(100, 60))  # leased 5, holds 4
    lowered = Rate(1, 60)
    assert admitted(limits, "key", lowered, 3) == 1


def test_keys_have_their_own_limits(buckets, clock):
    limits = limiter(buckets, clock)
    rate = Rate(2, 60)
    assert admitted(limits, "a", rate, 3) == 2
    assert admitted(limits, "b", rate, 3) == 2


def test_requests_are_admitted_while_the_buckets_are_down_and_stop_asking_once_the_breaker_opens(clock):
    down = DownBuckets()
    limits = limiter(down, clock)
    assert admitted(limits, "key", Rate(1, 60), 10) == 10
    assert down.calls == 3  # the breaker opened after 3 failures: no more attempts
    assert limits.breaker.state == "open"

    clock.advance(5)  # the breaker lets one probe through
    assert admitted(limits, "key", Rate(1, 60), 2) == 2
    assert down.calls == 4
