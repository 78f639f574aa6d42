"""The pacer of background work, booking batches whose size is known only once they went (plain Python)."""

from __future__ import annotations

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
