"""Per-key rate limits shared by every process: token buckets in Redis, spent from a local budget.

Each API key with a rate of N requests per period has one token bucket (capacity N, refilled
at N per period) that all processes share. A process does not ask the bucket for every
request: it leases a *slice* of tokens (one atomic script call) and spends them locally, so
most requests of a busy key cost no Redis round trip. Every token admitted came out of the
shared bucket, so over time the limit holds exactly; at any moment each process may hold up
to ``slice - 1`` tokens leased earlier, so a burst may pass the bucket by that much per
process, and a process may refuse (429) while another still holds a few tokens.

A refused lease says when the bucket will hold a token again; the process refuses that key
locally until then, so a client hammering past its limit costs Redis nothing. If the buckets
are unavailable (Redis down, the breaker open), requests are admitted: Redis is an
accelerator, not a dependency.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from caching.core.breaker import CircuitBreaker
from caching.core.errors import PredcacheError
from caching.core.store import CacheUnavailable

# Each lease takes this share of the limit (at least one token): few round trips for a busy
# key, and little held in any one process.
SLICE_FRACTION = 20
# The periods a rate may have: its unit as written (``N/s``), its seconds, its name.
PERIODS = {"s": (1, "second"), "m": (60, "minute")}
_RATE = re.compile(r"([1-9][0-9]{0,8})/([sm])")


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` requests per ``period_seconds``, bursts of up to ``count`` allowed."""

    count: int
    period_seconds: int

    def __post_init__(self) -> None:
        if self.count < 1 or self.period_seconds < 1:
            raise ValueError("a rate needs a count and a period of at least 1")

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``N/s`` or ``N/m``; ValueError for anything else."""
        match = _RATE.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"{text!r} is not a rate: use N/s or N/m, N a whole number from 1")
        return cls(int(match.group(1)), PERIODS[match.group(2)][0])

    @property
    def slice(self) -> int:
        """The tokens one lease asks for."""
        return max(1, self.count // SLICE_FRACTION)

    def __str__(self) -> str:
        unit = next((unit for unit, (seconds, _) in PERIODS.items() if seconds == self.period_seconds), None)
        return f"{self.count}/{unit}" if unit else f"{self.count}/{self.period_seconds}s"


class RateLimited(PredcacheError):
    """The API key has used its rate; ``retry_after`` whole seconds (at least 1) until it may try again."""

    code = "rate_limited"

    def __init__(self, rate: Rate, wait_seconds: float) -> None:
        self.retry_after = max(1, math.ceil(wait_seconds))
        super().__init__(f"rate limit of this API key exceeded ({rate}): retry after {self.retry_after} s")

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


@dataclass(frozen=True, slots=True)
class Lease:
    """What a bucket gave: ``granted`` tokens, or none and the seconds until it holds one again."""

    granted: int
    wait_seconds: float = 0.0


class TokenBuckets(Protocol):
    """Shared token buckets, one per name: each lease is atomic."""

    def lease(self, name: str, rate: Rate, want: int) -> Lease:
        """Take up to ``want`` tokens from ``name``'s bucket (refilled first); raises CacheUnavailable."""
        ...


class MemoryTokenBuckets:
    """Token buckets in process memory, with the Redis buckets' arithmetic (tests, one process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, when in ms)

    def lease(self, name: str, rate: Rate, want: int) -> Lease:
        with self._lock:
            now_ms = self._clock() * 1000
            tokens, at_ms = self._buckets.get(name, (float(rate.count), now_ms))
            tokens, granted, wait_ms = take(tokens, at_ms, now_ms, rate, want)
            self._buckets[name] = (tokens, max(at_ms, now_ms))
            return Lease(granted, wait_ms / 1000)


def take(tokens: float, at_ms: float, now_ms: float, rate: Rate, want: int) -> tuple[float, int, float]:
    """One lease from a bucket holding ``tokens`` at ``at_ms``: (tokens left, granted, ms to wait).

    The rule the Redis script follows too: refill since ``at_ms``, never past the capacity (a
    lowered rate caps what is there), grant whole tokens, and when none is there say how long
    until one is.
    """
    period_ms = rate.period_seconds * 1000
    if now_ms > at_ms:
        tokens += (now_ms - at_ms) * rate.count / period_ms
    tokens = min(tokens, float(rate.count))
    granted = min(want, math.floor(tokens))
    tokens -= granted
    wait_ms = 0.0 if granted else math.ceil((1 - tokens) * period_ms / rate.count)
    return tokens, granted, wait_ms


class _Budget:
    """One key's tokens in this process, and until when its bucket is known to be empty."""

    __slots__ = ("empty_until", "lock", "rate", "tokens")

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self.lock = threading.Lock()
        self.tokens = 0
        self.empty_until = 0.0


class RateLimiter:
    """Admits requests of rate-limited keys from local budgets leased from shared buckets.

    ``breaker`` guards the buckets' store (the cache's Redis breaker: one outage, one breaker);
    while it is open, or a lease fails, requests are admitted.
    """

    def __init__(
        self,
        buckets: TokenBuckets,
        *,
        breaker: CircuitBreaker,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.buckets = buckets
        self.breaker = breaker
        self._clock = clock
        self._lock = threading.Lock()
        self._budgets: dict[str, _Budget] = {}

    def admit(self, name: str, rate: Rate) -> None:
        """Spend one of ``name``'s tokens; RateLimited if its bucket has none."""
        budget = self._budgets.get(name)
        # A new key, or its rate was changed (the same Rate object while its check is remembered).
        if budget is None or (budget.rate is not rate and budget.rate != rate):
            with self._lock:
                budget = self._budgets.get(name)
                if budget is None or budget.rate != rate:
                    budget = self._budgets[name] = _Budget(rate)
        with budget.lock:
            if budget.tokens > 0:
                budget.tokens -= 1
                return
            now = self._clock()
            if now < budget.empty_until:
                raise RateLimited(rate, budget.empty_until - now)
            if not self.breaker.allow():
                return  # fail open: the buckets' Redis is known to be down
            try:
                lease = self.buckets.lease(name, rate, rate.slice)
            except CacheUnavailable:
                self.breaker.failure()
                return
            self.breaker.success()
            if lease.granted == 0:
                budget.empty_until = now + lease.wait_seconds
                raise RateLimited(rate, lease.wait_seconds)
            budget.tokens = lease.granted - 1
