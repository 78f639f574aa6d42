"""One backend call behind the model's circuit breaker, counted in the model's stats."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from caching.backends.base import (
    Backend,
    BackendError,
    BackendRejectedInput,
    BackendResult,
    BackendTimeout,
    BackendUnavailable,
    checked_result,
    client_numbered,
    with_reason,
)
from caching.core.breaker import BreakerRegistry
from caching.core.spec import CacheSpec
from caching.core.stats import StatsRecorder

logger = logging.getLogger(__name__)


class BackendCaller:
    """Calls a model for some of a request's instances; ``positions`` number them as the client did.

    Only an unavailable or overloaded model (no connection, timeouts, 429/502/503/504) counts
    against the breaker. Anything a request's own instances can cause (a rejection, a model
    server's 500, a model's code raising) is that request's error and neutral, so no client can
    switch a model off for the others.
    """

    def __init__(self, breakers: BreakerRegistry, stats: StatsRecorder) -> None:
        self.breakers = breakers
        self.stats = stats

    def __call__(
        self,
        spec: CacheSpec,
        backend: Backend,
        instances: Sequence[Any],
        parameters: dict[str, Any] | None,
        positions: Sequence[int],
    ) -> BackendResult:
        breaker = self.breakers.get(spec.namespace)
        if not breaker.allow():
            try:  # invalid input still gets its 400, not the model's 503
                backend.check(instances, parameters)
            except BackendRejectedInput as exc:
                raise client_numbered(exc, positions) from exc
            self.stats.record(spec.namespace, breaker_rejections=1)
            raise BackendUnavailable(
                f"{spec.model_name} is failing; calls resume in {breaker.retry_after():.1f}s (circuit open)"
            )
        self.stats.record(spec.namespace, backend_calls=1, backend_instances=len(instances))
        started = time.perf_counter()
        try:
            result = checked_result(backend.predict(instances, parameters), len(instances))
        except BackendRejectedInput as exc:
            breaker.neutral()
            self._failed(spec, exc, started)
            raise client_numbered(exc, positions) from exc
        except (BackendUnavailable, BackendTimeout) as exc:
            breaker.failure()
            self._failed(spec, exc, started)
            raise
        except BackendError as exc:
            breaker.neutral()
            self._failed(spec, exc, started)
            raise
        except Exception as exc:  # a model's own code failing is the model's error, not a 500
            breaker.neutral()
            logger.exception("%s raised", spec.model_name)
            error = BackendError(with_reason(f"{spec.model_name} failed ({type(exc).__name__})", str(exc)))
            self._failed(spec, error, started)
            raise error from exc
        except BaseException:
            breaker.neutral()  # interrupted: nothing learned about the model
            raise
        breaker.success()
        # What answering costs the model: the stats estimate from it what the hits saved.
        elapsed_us = round((time.perf_counter() - started) * 1_000_000)
        self.stats.record(spec.namespace, backend_us=elapsed_us, backend_answered=len(instances))
        return result

    def _failed(self, spec: CacheSpec, error: BackendError, started: float) -> None:
        self.stats.record_backend_error(
            spec.namespace, code=error.code, seconds=time.perf_counter() - started
        )
