"""The circuit breaker, driven by a fake clock: opening, probing, closing, and lost probes."""

from __future__ import annotations

import logging
import threading

import pytest

from caching.core.breaker import BreakerRegistry, CircuitBreaker


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def breaker(clock):
    return CircuitBreaker("redis", failure_threshold=3, reset_seconds=5.0, clock=clock)


def fail(breaker, times):
    for _ in range(times):
        breaker.failure()


def open_and_wait(breaker, clock):
    """Open the breaker and let its reset period pass, so the next allow() is the probe."""
    fail(breaker, 3)
    clock.advance(5.0)


def test_starts_closed_and_allows(breaker):
    assert breaker.state == "closed"
    assert breaker.allow()
    assert breaker.retry_after() == 0.0


def test_opens_after_threshold_consecutive_failures_and_not_before(breaker):
    fail(breaker, 2)
    assert breaker.state == "closed"
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open"
    assert not breaker.allow()


def test_success_in_between_resets_the_count(breaker):
    fail(breaker, 2)
    breaker.success()
    fail(breaker, 2)
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open"


def test_open_refuses_until_reset_seconds_pass(breaker, clock):
    fail(breaker, 3)
    clock.advance(4.75)
    assert not breaker.allow()
    assert breaker.state == "open"


def test_exactly_one_probe_after_reset(breaker, clock):
    open_and_wait(breaker, clock)
    assert breaker.allow()
    assert breaker.state == "half-open"
    assert not breaker.allow()
    assert not breaker.allow()


def test_exactly_one_probe_among_concurrent_callers(breaker, clock):
    open_and_wait(breaker, clock)
    threads_count = 20
    barrier = threading.Barrier(threads_count)
    results: list[bool] = []
    results_lock = threading.Lock()

    def call_allow():
        barrier.wait()
        allowed = breaker.allow()
        with results_lock:
            results.append(allowed)

    threads = [threading.Thread(target=call_allow) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == threads_count
    assert results.count(True) == 1


def test_successful_probe_closes(breaker, clock):
    open_and_wait(breaker, clock)
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed"
    assert breaker.allow()
    assert breaker.retry_after() == 0.0
    # The count was reset: it takes a full threshold of failures to open again.
    fail(breaker, 2)
    assert breaker.state == "closed"


def test_failed_probe_reopens_for_a_full_period(breaker, clock):
    open_and_wait(breaker, clock)
    clock.advance(1.0)  # the probe is granted late; the new period starts when it fails
    assert breaker.allow()
    clock.advance(2.0)
    breaker.failure()
    assert breaker.state == "open"
    assert breaker.retry_after() == 5.0
    clock.advance(4.75)
    assert not breaker.allow()
    clock.advance(0.25)
    assert breaker.allow()
    assert breaker.state == "half-open"


def test_lost_probe_is_replaced_after_another_period(breaker, clock):
    open_and_wait(breaker, clock)
    assert breaker.allow()  # this probe never reports
    clock.advance(4.75)
    assert not breaker.allow()
    clock.advance(0.25)
    assert breaker.allow()
    assert not breaker.allow()
    assert breaker.state == "half-open"


def test_late_failure_while_open_does_not_extend_the_period(breaker, clock):
    fail(breaker, 3)
    clock.advance(3.0)
    breaker.failure()
    assert breaker.retry_after() == 2.0


def test_retry_after(breaker, clock):
    assert breaker.retry_after() == 0.0
    fail(breaker, 3)
    assert breaker.retry_after() == 5.0
    clock.advance(2.0)
    assert breaker.retry_after() == 3.0
    clock.advance(10.0)
    assert breaker.retry_after() == 0.0
    assert breaker.allow()
    assert breaker.retry_after() == 5.0  # until a lost probe would be replaced
    clock.advance(1.5)
    assert breaker.retry_after() == 3.5


def test_transitions_are_logged(breaker, clock, caplog):
    caplog.set_level(logging.INFO, logger="caching.core.breaker")
    open_and_wait(breaker, clock)
    assert breaker.allow()
    breaker.success()
    levels_and_messages = [(record.levelno, record.getMessage()) for record in caplog.records]
    assert len(levels_and_messages) == 2
    assert levels_and_messages[0][0] == logging.WARNING
    assert "redis opened after 3 consecutive failures" in levels_and_messages[0][1]
    assert levels_and_messages[1] == (logging.INFO, "circuit breaker redis closed")


@pytest.mark.parametrize("bad_settings", [{"failure_threshold": 0}, {"reset_seconds": 0.0}])
def test_rejects_meaningless_settings(bad_settings):
    with pytest.raises(ValueError):
        CircuitBreaker("x", **bad_settings)


def test_registry_returns_the_same_breaker_per_name(clock):
    registry = BreakerRegistry(failure_threshold=1, reset_seconds=2.0, clock=clock)
    sentiment = registry.get("sentiment")
    assert registry.get("sentiment") is sentiment
    other = registry.get("churn")
    assert other is not sentiment
    assert (sentiment.name, sentiment.failure_threshold, sentiment.reset_seconds) == ("sentiment", 1, 2.0)
    sentiment.failure()
    assert sentiment.state == "open"
    assert other.state == "closed"
    clock.advance(2.0)
    assert sentiment.allow()


def test_registry_creates_one_breaker_per_name_under_concurrency():
    registry = BreakerRegistry()
    threads_count = 20
    barrier = threading.Barrier(threads_count)
    seen: list[CircuitBreaker] = []
    seen_lock = threading.Lock()

    def get_breaker():
        barrier.wait()
        breaker = registry.get("model")
        with seen_lock:
            seen.append(breaker)

    threads = [threading.Thread(target=get_breaker) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(breaker) for breaker in seen}) == 1


def test_a_neutral_probe_hands_the_probe_to_the_next_caller_at_once(breaker, clock):
    fail(breaker, 3)
    clock.advance(5.0)
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one at a time
    breaker.neutral()  # the probe's request was the client's own bad input
    assert breaker.allow()  # the next caller probes now, not a period later
    breaker.success()
    assert breaker.state == "closed"


def test_neutral_outcomes_neither_count_nor_reset_failures(breaker):
    fail(breaker, 2)
    breaker.neutral()
    assert breaker.state == "closed"
    breaker.failure()  # the third consecutive failure: neutral outcomes in between do not count
    assert breaker.state == "open"


def test_a_neutral_outcome_while_open_does_not_shorten_the_period(breaker, clock):
    fail(breaker, 3)
    clock.advance(1.0)
    breaker.neutral()  # a late call from before the breaker opened
    assert not breaker.allow()


def test_only_the_probes_own_neutral_outcome_hands_the_probe_on(breaker, clock):
    fail(breaker, 3)
    clock.advance(5.0)
    assert breaker.allow()  # this thread holds the probe
    late = threading.Thread(target=breaker.neutral)  # a call let through before the breaker opened
    late.start()
    late.join()
    assert not breaker.allow()  # still one probe at a time
