"""Pacing background work (warming, refresh-ahead) to a rate, so it never starves live traffic."""

from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    """Lets items through at ``rate`` a second on average, a batch at a time (``None``: no limit).

    A batch goes at once and books its share of time (``items / rate``); the next batch waits
    until that share has passed. Over any stretch of a few batches the rate holds, and the
    first batch of a run never waits. Not thread-safe: one pacer per run.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (or None for no limit)")
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self._next: float | None = None  # when the next batch may go

    def wait(self, items: int) -> float:
        """Block until ``items`` more may go, and book them; returns the seconds waited."""
        if self.rate is None:
            return 0.0
        now = self.clock()
        waited = 0.0
        if self._next is not None and self._next > now:
            waited = self._next - now
            self.sleep(waited)
            now = self._next
        self._next = now + items / self.rate
        return waited

    def book(self, items: int, *, since: float) -> None:
        """Book ``items`` that went at ``since`` (this clock's time when they were sent).

        For batches whose size is known only once they went (a warm learns from the answer
        how many instances the model computed): ``wait(0)`` before sending, ``book`` after.
        """
        if self.rate is not None:
            self._next = max(self._next or since, since + items / self.rate)
