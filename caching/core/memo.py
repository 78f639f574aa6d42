"""Small bounded, thread-safe memories: values trusted for a while, and what to do only once in a while."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from caching.core.sentinels import NO_VALUE, NoValue

__all__ = ["NO_VALUE", "ExpiringMemo", "NoValue", "OncePer"]

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


class OncePer(Generic[K]):
    """Says yes for a key at most once per ``seconds``: a side effect done once in a while, not per call."""

    def __init__(
        self, seconds: float, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[K, float] = {}

    def due(self, key: K) -> bool:
        """True if ``key`` was not due within the last ``seconds`` (and marks it due now)."""
        last = self._last.get(key)  # read without the lock: the common answer is "not yet"
        if last is not None and self._clock() - last < self.seconds:
            return False
        with self._lock:
            now = self._clock()
            last = self._last.get(key)
            if last is not None and now - last < self.seconds:
                return False  # another thread was first
            if len(self._last) >= self.max_entries:
                self._last.clear()
            self._last[key] = now
            return True
