"""Store calls behind the Redis circuit breaker: the request path fails open when the store does."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from caching.core.breaker import CircuitBreaker
from caching.core.sentinels import NO_VALUE, NoValue
from caching.core.store import CacheUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")


class StoreGuard:
    """Runs store calls while the breaker allows; :data:`NO_VALUE` when skipped or failing (logged)."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker

    def __call__(self, call: Callable[[], T]) -> T | NoValue:
        if not self.breaker.allow():
            return NO_VALUE
        try:
            value = call()
        except CacheUnavailable as exc:
            self.breaker.failure()
            logger.warning("redis unavailable: %s", exc)
            return NO_VALUE
        self.breaker.success()
        return value
