"""The stats recorder that also feeds the Prometheus metrics (:mod:`caching.core.metrics`), by model name.

:class:`MetricsRecorder` is the :class:`~caching.core.stats.StatsRecorder` the runtime builds:
every count still goes to Redis as before. Client requests (hits above all) are tallied in
process and written to the metrics by :meth:`MetricsRecorder.publish`, about once a second: a
prometheus-client value takes a lock and writes its file on every update, and a hit would make
five (requests, hits, seconds saved, the latency bucket and sum). The rest is rare next to hits
(backend calls and errors, breakers, warms) and written at once.

The ``model`` label is a registered model's name: the recorder is told each namespace's name as
its spec is built, and uses at most :data:`MAX_MODELS` names per process (then ``other``).
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from caching.core.errors import STATUS
from caching.core.metrics import (
    BACKEND_BREAKER,
    BACKEND_CALLS,
    BACKEND_ERRORS,
    BACKEND_SECONDS,
    CACHE_STATUSES,
    INSTANCES,
    INTEGRITY_FAILURES,
    L1_HITS,
    LATENCY_BUCKETS,
    REDIS_BREAKER,
    REDIS_ERRORS,
    REQUEST_SECONDS,
    REQUESTS,
    RESULTS,
    SECONDS_SAVED,
    SINGLE_FLIGHT_WAITS,
    STATE_VALUES,
    WARM_RUNS,
    WARM_STATUSES,
    WARMED,
)
from caching.core.spec import HIT, MISS, PARTIAL, STALE
from caching.core.stats import PendingWrites, StatsRecorder

MAX_MODELS = 500  # model labels per process; past it, "other" (renames and deletions add up)
OTHER = "other"
UNNAMED = "unnamed"  # a namespace counted before its spec named it (not expected)
CIRCUIT_OPEN = "circuit_open"  # a call the model's breaker refused: counted with the backend errors

# The request seconds' bucket bounds as the histogram keeps them (+Inf last): a tally counts into them.
_BOUNDS = (*LATENCY_BUCKETS, math.inf)


@dataclass(slots=True)
class _Tally:
    """One model's client requests since the last publish: plain numbers, cheap to add to."""

    requests: int = 0
    hit: int = 0
    miss: int = 0
    stale: int = 0
    bypass: int = 0
    l1: int = 0  # of the hits, answered by the in-process tier
    buckets: dict[str, list[int]] = field(default_factory=dict)  # by X-Cache status
    seconds: dict[str, float] = field(default_factory=dict)

    def observe(self, status: str, seconds: float) -> None:
        counts = self.buckets.get(status)
        if counts is None:
            counts = self.buckets[status] = [0] * len(_BOUNDS)
            self.seconds[status] = 0.0
        counts[bisect_left(_BOUNDS, seconds)] += 1  # the first bound >= seconds, as observe() picks
        self.seconds[status] += seconds


@dataclass(slots=True)
class _Series:
    """One model's label children, looked up once."""

    requests: Any
    instances: dict[str, Any]  # by result
    saved: Any
    l1_hits: Any
    seconds: dict[str, Any]  # by X-Cache status
    backend_seconds: Any
    answered_seconds: float = 0.0  # this process's successful calls, for pricing hits
    answered: int = 0
    unpriced_hits: int = 0  # hits before this process measured the model


class MetricsRecorder(StatsRecorder):
    """A :class:`StatsRecorder` that also updates the Prometheus metrics, by model name.

    Client requests are tallied in process and written to the metrics by :meth:`publish` (the
    runtime calls it every PREDCACHE_METRICS_PUBLISH_SECONDS, /metrics before it reads, and at
    exit): a hit adds to a few integers instead of writing five values. The rest (backend calls
    and errors, breakers, warms) is rare next to hits and written at once.
    """

    def __init__(self, alongside: Sequence[PendingWrites] = (), **options: Any) -> None:
        super().__init__(alongside, **options)
        self._names: dict[str, str] = {}  # namespace -> model name
        self._labels: set[str] = set()  # every model label this process used: its series stay
        self._series: dict[str, _Series] = {}  # namespace -> its children
        self._labels_lock = threading.Lock()
        self._tallies: dict[str, _Tally] = {}
        self._tally_lock = threading.Lock()
        self.redis_breaker_listener = _RedisBreakerListener()
        self.backend_breaker_listener = _BackendBreakerListener(self)

    def name_model(self, namespace: str, model_name: str) -> None:
        """Label ``namespace``'s metrics ``model_name`` (each spec built says so; a rename relabels)."""
        if self._names.get(namespace) == model_name:
            return
        with self._labels_lock:
            model_name = self._admitted(model_name)
            self._names[namespace] = model_name
            self._series.pop(namespace, None)

    def model_label(self, namespace: str) -> str:
        return self._names.get(namespace, UNNAMED)

    def record_request(
        self,
        namespace: str,
        *,
        hits: int,
        misses: int,
        hot_samples: int,
        computed: bool,
        seconds: float,
        stale: int = 0,
        l1_hits: int = 0,
    ) -> None:
        super().record_request(
            namespace,
            hits=hits,
            misses=misses,
            hot_samples=hot_samples,
            computed=computed,
            seconds=seconds,
            stale=stale,
            l1_hits=l1_hits,
        )
        status = STALE if stale else (HIT if not misses else (MISS if not hits else PARTIAL))
        with self._tally_lock:
            tally = self._tallies.get(namespace)
            if tally is None:
                tally = self._tallies[namespace] = _Tally()
            tally.requests += 1
            tally.hit += hits - stale
            tally.miss += misses
            tally.stale += stale
            tally.l1 += l1_hits
            tally.observe(status, seconds)

    def record(self, namespace: str, **counts: int) -> None:
        super().record(namespace, **counts)
        if "requests" in counts or "bypassed" in counts:  # a request that did not use the cache
            with self._tally_lock:
                tally = self._tallies.get(namespace)
                if tally is None:
                    tally = self._tallies[namespace] = _Tally()
                tally.requests += counts.get("requests", 0)
                tally.bypass += counts.get("bypassed", 0)
        model = self.model_label(namespace)
        if counts.get("backend_calls"):
            BACKEND_CALLS.labels(model).inc(counts["backend_calls"])
        if "backend_us" in counts:  # one successful call
            series = self._of(namespace)
            elapsed = counts["backend_us"] / 1_000_000
            series.backend_seconds.observe(elapsed)
            with self._labels_lock:
                series.answered_seconds += elapsed
                series.answered += counts.get("backend_answered", 0)
        if counts.get("integrity_failures"):
            INTEGRITY_FAILURES.labels(model).inc(counts["integrity_failures"])
        if counts.get("single_flight_waits"):
            SINGLE_FLIGHT_WAITS.labels(model).inc(counts["single_flight_waits"])
        if counts.get("breaker_rejections"):
            BACKEND_ERRORS.labels(model, CIRCUIT_OPEN).inc(counts["breaker_rejections"])

    def record_backend_error(self, namespace: str, *, code: str, seconds: float) -> None:
        model = self.model_label(namespace)
        # Codes come from the one table of error codes: a bounded set, whatever a backend raises.
        BACKEND_ERRORS.labels(model, code if code in STATUS else "backend_error").inc()
        self._of(namespace).backend_seconds.observe(seconds)

    def record_warm_run(self, *, model_name: str, status: str, warmed: int) -> None:
        """A warm run of ``model_name`` ended with ``status`` (finished or failed), computing ``warmed``."""
        with self._labels_lock:
            model = self._admitted(model_name)
        WARM_RUNS.labels(model, status if status in WARM_STATUSES else "failed").inc()
        if warmed:
            WARMED.labels(model).inc(warmed)

    def publish(self) -> None:
        """Write the client requests tallied since the last publish to the metrics."""
        with self._tally_lock:
            tallies, self._tallies = self._tallies, {}
        for namespace, tally in tallies.items():
            series = self._of(namespace)
            if tally.requests:
                series.requests.inc(tally.requests)
            for result in ("hit", "miss", "stale", "bypass"):
                if getattr(tally, result):
                    series.instances[result].inc(getattr(tally, result))
            if tally.l1:
                series.l1_hits.inc(tally.l1)
            for status, counts in tally.buckets.items():
                _add_observations(series.seconds[status], counts, tally.seconds[status])
            with self._labels_lock:
                unpriced = series.unpriced_hits + tally.hit
                per_instance = series.answered_seconds / series.answered if series.answered else None
                series.unpriced_hits = unpriced if per_instance is None else 0
            if unpriced and per_instance is not None:
                series.saved.inc(unpriced * per_instance)

    def _of(self, namespace: str) -> _Series:
        series = self._series.get(namespace)
        if series is None:
            model = self.model_label(namespace)
            series = _Series(
                requests=REQUESTS.labels(model),
                instances={result: INSTANCES.labels(model, result) for result in RESULTS},
                saved=SECONDS_SAVED.labels(model),
                l1_hits=L1_HITS.labels(model),
                seconds={status: REQUEST_SECONDS.labels(model, status) for status in CACHE_STATUSES},
                backend_seconds=BACKEND_SECONDS.labels(model),
            )
            # Two threads may build it at once: both keep the first stored (its pricing counts).
            series = self._series.setdefault(namespace, series)
        return series

    def _admitted(self, model_name: str) -> str:
        """``model_name``, or ``other`` once this process used MAX_MODELS labels (with the lock held)."""
        if model_name not in self._labels:
            if len(self._labels) >= MAX_MODELS:
                return OTHER
            self._labels.add(model_name)
        return model_name


def _add_observations(histogram: Any, counts: list[int], seconds: float) -> None:
    """Add tallied observations to a histogram's child: its bucket values and sum, as observe() does.

    prometheus-client has no public call adding many observations at once; this reads its
    child's ``_buckets`` and ``_sum`` (pinned version; tests/core/test_metrics.py reads them back).
    """
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)
    histogram._sum.inc(seconds)


class _RedisBreakerListener:
    def breaker_failed(self, name: str) -> None:
        REDIS_ERRORS.inc()

    def breaker_changed(self, name: str, state: str) -> None:
        REDIS_BREAKER.set(STATE_VALUES[state])


class _BackendBreakerListener:
    """The model breakers are named by namespace (see caching/core/backend_calls.py)."""

    def __init__(self, recorder: MetricsRecorder) -> None:
        self._recorder = recorder

    def breaker_failed(self, name: str) -> None:  # the failures are counted as backend errors
        pass

    def breaker_changed(self, name: str, state: str) -> None:
        BACKEND_BREAKER.labels(self._recorder.model_label(name)).set(STATE_VALUES[state])
