"""A small bounded, thread-safe memory whose entries are trusted for a while (settings, verified keys)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from caching.core.sentinels import NO_VALUE, NoValue

__all__ = ["NO_VALUE", "ExpiringMemo", "NoValue"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringMemo(Generic[K, V]):
    """Remembers values for ``seconds``; past ``max_entries`` it forgets everything and starts over."""

    def __init__(
        self, seconds: float, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | NoValue:
        """The value remembered for ``key`` if it is recent enough, else :data:`NO_VALUE`."""
        remembered = self._entries.get(key)  # a dict read needs no lock; writes replace whole items
        if remembered is None or self._clock() - remembered[0] >= self.seconds:
            return NO_VALUE
        return remembered[1]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()  # unknown keys are remembered too: stay bounded
            self._entries[key] = (self._clock(), value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
