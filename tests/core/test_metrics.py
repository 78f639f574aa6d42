"""The Prometheus metrics the read-through feeds, read back as /metrics reads them (the files)."""

from __future__ import annotations

import dataclasses
import os
import uuid
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from caching.backends.base import BackendUnavailable
from caching.core import metrics_recorder
from caching.core.breaker import BreakerRegistry, CircuitBreaker
from caching.core.metrics_recorder import MetricsRecorder
from caching.core.readthrough import ReadThroughCache
from caching.core.spec import BYPASS, CacheSpec
from caching.core.store import CacheUnavailable
from tests.core.readthrough_support import Clock, InlineRefresher, Model, spec


def sample(name: str, **labels: str) -> float:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    return registry.get_sample_value(name, labels) or 0.0


def named(**policy: Any) -> CacheSpec:
    """A spec of a model of its own (so the test's series start at zero)."""
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    return dataclasses.replace(spec(**policy), namespace=f"pc{{t.{name}}}", model_name=name)


def cache(recorder: MetricsRecorder, clock: Clock, **options: Any) -> ReadThroughCache:
    from caching.core.memory_store import MemoryPredictionStore

    return ReadThroughCache(
        options.pop("store", None) or MemoryPredictionStore(clock=clock),
        max_depth=32,
        stats=recorder,
        clock=clock,
        monotonic=clock,
        refresher=InlineRefresher(),
        **options,
    )


def test_hits_misses_and_stale_are_counted_apart_and_the_hits_priced():
    recorder, clock, model = MetricsRecorder(), Clock(), Model()
    policy = named(stale_while_revalidate=300)
    recorder.name_model(policy.namespace, policy.model_name)
    reader = cache(recorder, clock)
    reader.predict(policy, model, [[1]], None)  # MISS
    reader.predict(policy, model, [[1], [1]], None)  # HIT, two instances
    clock.now += 100
    assert reader.predict(policy, model, [[1]], None).cache_status == "STALE"
    m = {"model": policy.model_name}
    assert sample("predcache_requests_total", **m) == 0  # tallied in process until published
    recorder.publish()
    assert sample("predcache_requests_total", **m) == 3
    assert sample("predcache_instances_total", **m, result="miss") == 1
    assert sample("predcache_instances_total", **m, result="hit") == 2
    assert sample("predcache_instances_total", **m, result="stale") == 1
    assert sample("predcache_request_seconds_count", **m, cache="STALE") == 1
    assert sample("predcache_backend_calls_total", **m) == 1
    measured = sample("predcache_backend_seconds_sum", **m)
    assert measured > 0
    # Two fresh hits, each at what the one answered instance cost; the stale one saved nothing.
    assert sample("predcache_backend_seconds_saved_total", **m) == pytest.approx(2 * measured)


def test_hits_before_any_measurement_are_priced_by_the_first_one():
    recorder, clock, model = MetricsRecorder(), Clock(), Model()
    policy = named()
    recorder.name_model(policy.namespace, policy.model_name)
    other_process = cache(MetricsRecorder(), clock)  # computes it: this recorder never measured
    other_process.predict(policy, model, [[1]], None)
    store = other_process.store
    reader = cache(recorder, clock, store=store)
    reader.predict(policy, model, [[1]], None)
    recorder.publish()
    m = {"model": policy.model_name}
    assert sample("predcache_instances_total", **m, result="hit") == 1
    assert sample("predcache_backend_seconds_saved_total", **m) == 0  # nothing to price it by yet
    reader.predict(policy, model, [[2]], None)  # its first call: the earlier hit is priced now
    recorder.publish()
    measured = sample("predcache_backend_seconds_sum", **m)
    assert sample("predcache_backend_seconds_saved_total", **m) == pytest.approx(measured)


def test_backend_errors_by_code_and_the_breaker_state():
    recorder, clock, model = MetricsRecorder(), Clock(), Model()
    policy = named()
    recorder.name_model(policy.namespace, policy.model_name)
    breakers = BreakerRegistry(
        failure_threshold=2, reset_seconds=60, clock=clock, listener=recorder.backend_breaker_listener
    )
    reader = cache(recorder, clock, backend_breakers=breakers)
    m = {"model": policy.model_name}
    model.down()
    for instance in ([1], [2], [3]):
        with pytest.raises(BackendUnavailable):
            reader.predict(policy, model, [instance], None)
    assert sample("predcache_backend_errors_total", **m, code="backend_unavailable") == 2
    assert sample("predcache_backend_errors_total", **m, code="circuit_open") == 1
    assert sample("predcache_backend_breaker_state", **m) == 2  # open
    assert sample("predcache_backend_seconds_count", **m) == 2  # failed calls are timed too
    model.failure = None
    clock.now += 61
    reader.predict(policy, model, [[4]], None)  # the probe answers: closed
    assert sample("predcache_backend_breaker_state", **m) == 0


class DownStore:
    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise CacheUnavailable("connection refused")

        return fail


def test_redis_errors_and_bypassed_instances():
    recorder, clock, model = MetricsRecorder(), Clock(), Model()
    policy = named()
    recorder.name_model(policy.namespace, policy.model_name)
    breaker = CircuitBreaker(
        "redis", failure_threshold=2, reset_seconds=60, listener=recorder.redis_breaker_listener
    )
    reader = cache(recorder, clock, store=DownStore(), redis_breaker=breaker)
    errors_before = sample("predcache_redis_errors_total")
    answers = [reader.predict(policy, model, [[n], [n + 10]], None) for n in range(3)]
    assert [answer.cache_status for answer in answers] == [BYPASS] * 3
    recorder.publish()
    assert sample("predcache_redis_errors_total") - errors_before == 2  # then the breaker skips Redis
    assert sample("predcache_redis_breaker_state") == 2
    m = {"model": policy.model_name}
    assert sample("predcache_instances_total", **m, result="bypass") == 6
    assert sample("predcache_requests_total", **m) == 3


def test_model_labels_are_capped(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(metrics_recorder, "MAX_MODELS", 3)
    recorder = MetricsRecorder()
    for n in range(5):
        recorder.name_model(f"ns{n}", f"model{n}")
    assert [recorder.model_label(f"ns{n}") for n in range(5)] == [
        "model0",
        "model1",
        "model2",
        "other",
        "other",
    ]
    recorder.name_model("ns1", "model1")
    recorder.name_model("ns1", "renamed")  # a new series, one more label: past the cap
    assert recorder.model_label("ns1") == "other"
    recorder.record_warm_run(model_name="model9", status="finished", warmed=1)
    assert sample("predcache_warm_runs_total", model="model9", status="finished") == 0
    assert recorder.model_label("never-named") == "unnamed"


def test_a_renamed_model_is_labelled_by_its_new_name():
    recorder = MetricsRecorder()
    recorder.name_model("ns1", "before")
    recorder.name_model("ns1", "after")
    assert recorder.model_label("ns1") == "after"


def test_warm_runs_and_instances_warmed():
    recorder, name = MetricsRecorder(), f"metrics-{uuid.uuid4().hex[:8]}"
    recorder.record_warm_run(model_name=name, status="finished", warmed=5)
    recorder.record_warm_run(model_name=name, status="failed", warmed=0)
    assert sample("predcache_warm_runs_total", model=name, status="finished") == 1
    assert sample("predcache_warm_runs_total", model=name, status="failed") == 1
    assert sample("predcache_warmed_instances_total", model=name) == 5


def test_tallied_request_times_land_in_the_buckets_observe_would_pick():
    recorder, name = MetricsRecorder(), f"metrics-{uuid.uuid4().hex[:8]}"
    recorder.name_model("ns", name)
    for seconds in (0.0003, 0.0005, 0.3, 100.0):
        recorder.record_request("ns", hits=1, misses=0, hot_samples=0, computed=False, seconds=seconds)
    recorder.publish()
    m = {"model": name, "cache": "HIT"}
    assert sample("predcache_request_seconds_bucket", **m, le="0.0005") == 2  # le: at or under
    assert sample("predcache_request_seconds_bucket", **m, le="0.25") == 2
    assert sample("predcache_request_seconds_bucket", **m, le="0.5") == 3
    assert sample("predcache_request_seconds_bucket", **m, le="60.0") == 3
    assert sample("predcache_request_seconds_bucket", **m, le="+Inf") == 4
    assert sample("predcache_request_seconds_count", **m) == 4
    assert sample("predcache_request_seconds_sum", **m) == pytest.approx(100.3008)
