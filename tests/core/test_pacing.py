"""The pacer of background work, booking batches whose size is known only once they went (plain Python)."""

from __future__ import annotations

import pytest

from caching.core.pacing import Pacer


class Clock:
    """Time that passes only when told to (or slept)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_batch_booked_after_it_went_counts_from_when_it_went():
    clock = Clock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        pacer.wait(0)
        started = clock()
        clock.now += 0.5  # the call takes half a second...
        pacer.book(20, since=started)  # ...and the answer says 20 instances were computed
    assert clock.slept == [1.5, 1.5]  # 2 s a batch from its start: the call's time is part of it


def test_nothing_sent_books_nothing_and_no_rate_never_waits():
    clock = Clock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    pacer.wait(0)
    pacer.book(0, since=clock())  # all cached: the model got nothing
    assert pacer.wait(0) == 0.0
    unpaced = Pacer(None, clock=clock, sleep=clock.sleep)
    unpaced.book(10**6, since=clock())
    assert unpaced.wait(0) == 0.0


def test_the_pacer_holds_the_rate_batch_by_batch():
    clock = Clock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        pacer.wait(20)  # 20 instances at 10/s book 2 s each
    assert clock.slept == [2.0, 2.0, 2.0, 2.0]
    assert 100 / (clock.now + 2.0) == 10


def test_the_pacer_does_not_wait_for_time_already_spent_and_none_means_no_limit():
    clock = Clock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    pacer.wait(10)
    clock.now += 5  # the backend call took longer than the batch's share
    assert pacer.wait(10) == 0.0
    assert Pacer(None, clock=clock, sleep=clock.sleep).wait(10**6) == 0.0
    with pytest.raises(ValueError):
        Pacer(0)
