"""A small thread-safe circuit breaker, so an outage of Redis or a model costs no per-request timeout."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"


class BreakerListener(Protocol):
    """Told of each failure a breaker records and of each change of its state (the metrics)."""

    def breaker_failed(self, name: str) -> None: ...

    def breaker_changed(self, name: str, state: str) -> None: ...


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; after ``reset_seconds`` lets one probe through.

    Callers ask ``allow()`` before the guarded call and report its outcome with ``success()``,
    ``failure()``, or ``neutral()`` for an outcome that says nothing about the guarded service's
    health (the caller's own bad input, say). While half-open only the single probe is let
    through; a neutral probe hands the probe on to the next caller at once, and if it never
    reports (its caller crashed), another probe is allowed ``reset_seconds`` after it started.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 3,
        reset_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        listener: BreakerListener | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_seconds <= 0:
            raise ValueError("reset_seconds must be positive")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        # When the breaker opened, or when the current half-open probe was let through.
        self._since = 0.0
        self._probe: int | None = None  # the thread making the half-open probe
        self._listener = listener

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (entered when ``allow()`` grants a probe)."""
        with self._lock:
            return self._state

    def allow(self) -> bool:
        """Whether the caller may make the guarded call now: always when closed, else one probe per period."""
        if self._state == CLOSED:  # read without the lock: the request path's case, kept cheap
            return True
        with self._lock:
            if self._state == CLOSED:
                return True
            now = self._clock()
            if now - self._since < self.reset_seconds:
                return False
            # Open long enough, or the previous probe was lost: this caller is the probe.
            self._state = HALF_OPEN
            self._since = now
            self._probe = threading.get_ident()
            self._changed()
            return True

    def success(self) -> None:
        """Record a successful call: close the breaker and reset the failure count."""
        if self._state == CLOSED and not self._failures:  # nothing to change (read without the lock)
            return
        with self._lock:
            self._failures = 0
            if self._state != CLOSED:
                logger.info("circuit breaker %s closed", self.name)
                self._state = CLOSED
                self._changed()

    def failure(self) -> None:
        """Record a failed call: open at the threshold, or re-open for a full period if it was the probe."""
        with self._lock:
            self._failures += 1
            if self._listener is not None:
                self._listener.breaker_failed(self.name)
            # A late failure while already open must not push the probe further out.
            if self._state == OPEN or (self._state == CLOSED and self._failures < self.failure_threshold):
                return
            self._state = OPEN
            self._since = self._clock()
            self._changed()
            logger.warning(
                "circuit breaker %s opened after %d consecutive failures; next probe in %.1f s",
                self.name,
                self._failures,
                self.reset_seconds,
            )

    def neutral(self) -> None:
        """Record an outcome that proves nothing either way: a half-open probe passes to the next caller.

        Only the probe's own outcome does (a probe and its outcome run on one thread); a call let
        through before the breaker opened that ends now changes nothing.
        """
        with self._lock:
            if self._state == HALF_OPEN and self._probe == threading.get_ident():
                self._since = self._clock() - self.reset_seconds
                self._probe = None

    def _changed(self) -> None:
        """Tell the listener the new state (with the lock held: changes arrive in their order)."""
        if self._listener is not None:
            self._listener.breaker_changed(self.name, self._state)

    def retry_after(self) -> float:
        """Seconds until a probe will be let through (0 when closed or when one is due now)."""
        with self._lock:
            if self._state == CLOSED:
                return 0.0
            return max(0.0, self._since + self.reset_seconds - self._clock())


class BreakerRegistry:
    """Thread-safe name -> ``CircuitBreaker`` map, creating each breaker on first use with shared settings."""

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        reset_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        listener: BreakerListener | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._listener = listener
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}

    def items(self) -> list[tuple[str, CircuitBreaker]]:
        """Each name with its breaker, as a list taken under the lock (safe to walk while others add)."""
        with self._lock:
            return list(self._breakers.items())

    def get(self, name: str) -> CircuitBreaker:
        """The breaker for ``name``, the same object on every call."""
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                breaker = CircuitBreaker(
                    name,
                    failure_threshold=self.failure_threshold,
                    reset_seconds=self.reset_seconds,
                    clock=self._clock,
                    listener=self._listener,
                )
                self._breakers[name] = breaker
            return breaker
