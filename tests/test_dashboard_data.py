"""The dashboard's data: per-minute counters and breaker reports written by the stats flush."""

from __future__ import annotations

import uuid

import pytest
import redis

from caching.core.breaker import BreakerRegistry, CircuitBreaker
from caching.core.breaker_report import REPORT_FRESH_SECONDS, BreakerReport, fresh_seconds, parse_breakers
from caching.core.keys import KeySpace
from caching.core.stats import StatsRecorder
from caching.core.timeline import minute_of, read_minutes
from tests.conftest import SESSION_PREFIX

NOON = 1_796_000_400.0  # some moment on a minute boundary


@pytest.fixture
def client_redis(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def keyspace() -> KeySpace:
    return KeySpace(f"{SESSION_PREFIX}{uuid.uuid4().hex[:8]}:", "tests")


def test_the_flush_files_counts_under_their_minute_for_the_retention(client_redis, keyspace) -> None:
    now = [NOON + 5]
    stats = StatsRecorder(minutes_kept_seconds=3600, clock=lambda: now[0])
    iris, wine = keyspace.namespace(1), keyspace.namespace(2)
    stats.record_request(iris, hits=2, misses=1, hot_samples=0, computed=True, seconds=0.010)
    stats.record_request(iris, hits=3, misses=0, hot_samples=0, computed=False, seconds=0.001)
    stats.record_request(wine, hits=0, misses=4, hot_samples=0, computed=True, seconds=0.020)
    stats.record(iris, backend_calls=1, backend_answered=1, backend_us=9000, decode_errors=1)
    assert stats.flush(client_redis, keyspace)
    now[0] = NOON + 65  # the next minute
    stats.record_request(iris, hits=1, misses=0, hot_samples=0, computed=False, seconds=0.002)
    assert stats.flush(client_redis, keyspace)

    first = minute_of(NOON)
    minutes = read_minutes(client_redis, keyspace, iris, [first - 1, first, first + 1])
    assert minutes[0]["requests"] == 0
    assert {name: minutes[1][name] for name in ("requests", "hits", "misses", "backend_calls")} == {
        "requests": 2,
        "hits": 5,
        "misses": 1,
        "backend_calls": 1,
    }
    assert (minutes[1]["cached_requests"], minutes[1]["cached_us"]) == (1, 1000)
    assert (minutes[1]["computed_requests"], minutes[1]["computed_us"]) == (1, 10000)
    assert (minutes[2]["requests"], minutes[2]["hits"]) == (1, 1)
    # Counters the charts do not draw stay in the lifetime totals only.
    assert client_redis.hget(keyspace.minute_stats(iris, first), "decode_errors") is None
    assert client_redis.hget(keyspace.stats(iris), "decode_errors") == b"1"
    totals = read_minutes(client_redis, keyspace, keyspace.all_models(), [first])[0]
    assert (totals["requests"], totals["hits"], totals["misses"]) == (3, 5, 5)
    assert 3590 <= client_redis.ttl(keyspace.minute_stats(iris, first)) <= 3600
    assert 3590 <= client_redis.ttl(keyspace.minute_stats(keyspace.all_models(), first)) <= 3600


def test_no_minutes_are_kept_when_the_retention_is_zero(client_redis, keyspace) -> None:
    stats = StatsRecorder(clock=lambda: NOON)
    stats.record_request(keyspace.namespace(1), hits=1, misses=0, hot_samples=0, computed=False, seconds=0)
    assert stats.flush(client_redis, keyspace)
    assert client_redis.exists(keyspace.minute_stats(keyspace.namespace(1), minute_of(NOON))) == 0
    assert client_redis.hget(keyspace.stats(keyspace.namespace(1)), "requests") == b"1"


def test_a_process_reports_its_open_breakers_and_withdraws_them_once_closed(client_redis, keyspace) -> None:
    now = [NOON]
    registry = BreakerRegistry(failure_threshold=1, reset_seconds=60, clock=lambda: now[0])
    redis_breaker = CircuitBreaker("redis", clock=lambda: now[0])
    namespace = keyspace.namespace(7)
    report = BreakerReport(
        lambda: [*registry.items(), (keyspace.all_models(), redis_breaker)], "web-1:42", clock=lambda: now[0]
    )
    stats = StatsRecorder(alongside=[report])
    registry.get(namespace).failure()
    assert stats.flush(client_redis, keyspace)
    stored = client_redis.hgetall(keyspace.breakers(namespace))
    reported = parse_breakers(stored, now=now[0])
    assert [(found.process, found.state) for found in reported] == [("web-1:42", "open")]
    assert client_redis.exists(keyspace.breakers(keyspace.all_models())) == 0  # Redis's breaker is closed
    # A report no longer refreshed (its process died) is not shown.
    assert parse_breakers(stored, now=now[0] + REPORT_FRESH_SECONDS + 1) == []
    # Flushes far apart: a report stands for three of them.
    slow = fresh_seconds(40.0)
    assert len(parse_breakers(stored, now=now[0] + slow - 1, fresh_for=slow)) == 1

    registry.get(namespace).success()
    assert stats.flush(client_redis, keyspace)
    assert client_redis.hgetall(keyspace.breakers(namespace)) == {}

    # ... and the report's key outlives them.
    registry.get(namespace).failure()
    slow_report = BreakerReport(lambda: registry.items(), "web-2:43", flush_interval=40.0)
    assert StatsRecorder(alongside=[slow_report]).flush(client_redis, keyspace)
    assert client_redis.ttl(keyspace.breakers(namespace)) > slow


def test_a_usage_measurement_past_its_budget_is_a_lower_bound(client_redis, keyspace) -> None:
    from caching.core.usage import measure_usage, parse_usage, save_usage

    namespace, other = keyspace.namespace(1), keyspace.namespace(2)
    client_redis.mset({keyspace.entry(namespace, f"{number:032x}"): b"x" * 100 for number in range(300)})
    client_redis.mset({keyspace.entry(other, f"{number:032x}"): b"y" for number in range(50)})

    whole = measure_usage(client_redis, keyspace, namespace, scan_calls=10_000, batch=1000, samples=8)
    assert (whole.entries, whole.complete, whole.sampled) == (300, True, 8)
    assert whole.estimated_bytes == 300 * whole.sampled_bytes // 8
    assert whole.estimated_bytes >= 300 * 100

    cut = measure_usage(client_redis, keyspace, namespace, scan_calls=2, batch=10, samples=8)
    assert not cut.complete and cut.entries < 300

    save_usage(client_redis, keyspace, namespace, cut, keep_seconds=60)
    assert parse_usage(client_redis.hgetall(keyspace.usage(namespace))) == cut
    assert parse_usage(client_redis.hgetall(keyspace.usage(other))) is None
