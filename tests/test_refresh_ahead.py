"""Refresh-ahead: hits sampled on the hit path make a hot set; a real worker refreshes it before expiry."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import current_app

from caching.core.hotset import hot_set_read
from caching.models import WarmSet
from caching.runtime import get_runtime
from caching.selectors import model_stats, served_model_get
from caching.services import CLEAR, model_upsert
from caching.services.refresh import hot_warm_set_name
from tests.support.processes import RedisServer, wait_until


@pytest.fixture(scope="module")
def celery(
    broker: Any, redis_url: str, django_db_setup: None, django_db_blocker: Any, tmp_path_factory: Any
) -> Iterator[Any]:
    """This module's worker: no beat (the only sweeps are the ones the tests send), stats flushed
    every 0.2 s (what a sweep counts reaches Redis while the test watches)."""
    from tests.support.celery_worker import celery_worker
    from tests.support.gunicorn_server import environment_serving_the_test_database

    environment = {
        **environment_serving_the_test_database(django_db_blocker, redis_url, name="worker"),
        **broker.environment(),
        "PREDCACHE_STATS_FLUSH_SECONDS": "0.2",
    }
    with celery_worker(tmp_path_factory.mktemp("celery"), environment=environment) as worker:
        worker.key_prefix = environment["PREDCACHE_KEY_PREFIX"]
        yield worker


@pytest.fixture
def every_hit_sampled(settings: Any) -> None:
    settings.PREDCACHE_HOT_SAMPLE_RATE = 1


def flush() -> None:
    """What the stats flusher thread does every second in a web process (off in tests)."""
    runtime = get_runtime()
    assert runtime.stats.flush(runtime.client, runtime.keyspace)


def digest_of(model_name: str, instance: Any, parameters: Any = None) -> str:
    served = served_model_get(name=model_name)
    return get_runtime().cache.instance_digests(served.spec, [instance], parameters)[0]


def header_of(model, digest: str) -> dict[str, Any] | None:
    runtime = get_runtime()
    return runtime.store.entry_headers(runtime.keyspace.namespace(model.pk), [digest])[0]


def sweep(model, worker) -> str:
    """Send the task beat sends on the model's refresh-ahead schedule; wait until the worker ran it.

    Returns what the worker logged of its answer (the tests keep no result backend).
    """
    task_id = current_app.send_task("predcache.refresh_ahead", args=[model.pk]).id
    finished = f"predcache.refresh_ahead[{task_id}] succeeded"
    wait_until(lambda: finished in worker.log_text(), timeout=60, what="the refresh-ahead task")
    return worker.log_text().split(finished, 1)[1].splitlines()[0]


def swept(model, **expected: int) -> dict[str, Any]:
    """The model's stats once they show ``expected`` (the worker flushes its counts every 0.2 s)."""
    wait_until(
        lambda: all(model_stats(model=model)[field] == value for field, value in expected.items()),
        timeout=10,
        what=f"stats {expected}",
    )
    return model_stats(model=model)


@pytest.mark.django_db(transaction=True)
def test_a_hot_entry_is_refreshed_before_it_expires_while_a_cold_one_expires(
    on_worker, every_hit_sampled, api, backend
):
    # 8 s: room for the requests, flushes and the sweep below on a busy machine, before expiry.
    model, _ = model_upsert(name="popular", backend="http", target=backend.predict_url, ttl_seconds=8)
    hot, cold = {"instances": [["hot"]]}, {"instances": [["cold"]]}
    assert api.predict("popular", hot)["X-Cache"] == "MISS"
    assert api.predict("popular", cold)["X-Cache"] == "MISS"
    # The cold instance was popular once, but not since the entry it has now was written.
    assert api.predict("popular", cold)["X-Cache"] == "HIT"
    flush()
    assert api.predict("popular", cold, **{"Cache-Control": "no-cache"})["X-Cache"] == "MISS"
    for _ in range(3):
        assert api.predict("popular", hot)["X-Cache"] == "HIT"
    flush()
    hot_digest, cold_digest = digest_of("popular", ["hot"]), digest_of("popular", ["cold"])
    original = header_of(model, hot_digest)
    # Every hot entry is due at once (a window twice the TTL); refreshed entries now live a minute,
    # so the answers below do not depend on how fast the sweep ran.
    model_upsert(name="popular", ttl_seconds=60, refresh_ahead_seconds=120)
    backend.reset_calls()

    sweep(model, on_worker)

    stats = swept(model, refresh_runs=1)
    assert (stats["refresh_hot"], stats["refreshed"], stats["refresh_cold"], stats["refresh_gone"]) == (
        1,
        1,
        1,
        0,
    )
    assert backend.calls() == [{"instances": [["hot"]]}]
    refreshed = header_of(model, hot_digest)
    assert refreshed["t"] > original["t"]  # the entry's creation time moved
    assert refreshed["x"] - refreshed["t"] == pytest.approx(60)
    # The cold entry expires at its TTL (written after the hot one: the hot one's original is gone too).
    wait_until(lambda: header_of(model, cold_digest) is None, timeout=20, what="the cold entry's expiry")
    assert time.time() > original["x"]
    assert api.predict("popular", hot)["X-Cache"] == "HIT"
    assert api.predict("popular", cold)["X-Cache"] == "MISS"
    assert len(backend.calls()) == 2  # the refresh, then the cold instance again
    flush()
    assert model_stats(model=model)["requests"] == 9  # the sweep is no client's request


@pytest.mark.django_db(transaction=True)
def test_a_sweep_batches_by_parameters_and_warm_batch_size(on_worker, every_hit_sampled, api, backend):
    model, _ = model_upsert(
        name="batched", backend="http", target=backend.predict_url, ttl_seconds=60, warm_batch_size=2
    )
    plain = {"instances": [[i] for i in range(5)]}
    tuned = {"instances": [["a"], ["b"]], "parameters": {"k": 1}}
    for document in (plain, tuned, plain, tuned):
        api.predict("batched", document)
    flush()
    model_upsert(name="batched", refresh_ahead_seconds=120, warm_rate=CLEAR)
    backend.reset_calls()

    sweep(model, on_worker)

    assert swept(model, refresh_runs=1)["refreshed"] == 7

    calls = backend.calls()
    assert sorted(len(call["instances"]) for call in calls) == [1, 2, 2, 2]
    by_parameters = {
        str(parameters): sorted(
            i for call in calls if call.get("parameters") == parameters for i in call["instances"]
        )
        for parameters in (None, {"k": 1})
    }
    assert by_parameters == {"None": [[0], [1], [2], [3], [4]], "{'k': 1}": [["a"], ["b"]]}


@pytest.mark.django_db(transaction=True)
def test_a_sweep_while_another_runs_is_skipped(on_worker, every_hit_sampled, api, backend):
    model, _ = model_upsert(
        name="locked", backend="http", target=backend.predict_url, ttl_seconds=60, refresh_ahead_seconds=120
    )
    for _ in range(2):
        api.predict("locked", {"instances": [[1]]})
    flush()
    runtime = get_runtime()
    namespace = runtime.keyspace.namespace(model.pk)
    token = secrets.token_hex(8)
    assert runtime.store.job_lock(namespace, "warm", token, 30)  # a warm runs (or another sweep)
    backend.reset_calls()
    try:
        assert "'skipped'" in sweep(model, on_worker)
    finally:
        runtime.store.job_unlock(namespace, "warm", token)
    assert backend.calls() == []
    assert model_stats(model=model)["refresh_runs"] == 0
    sweep(model, on_worker)
    assert swept(model, refresh_runs=1)["refreshed"] == 1


@pytest.mark.django_db
def test_a_hit_is_one_redis_round_trip_with_every_hit_sampled(
    api, backend, http_model, every_hit_sampled, settings, tmp_path
):
    server = RedisServer(tmp_path / "redis").start()
    try:
        settings.REDIS_URL = server.url
        observer = redis.Redis.from_url(server.url)

        def commands() -> dict[str, int]:
            stats = observer.info("commandstats")
            return {name: value["calls"] for name, value in stats.items() if name != "cmdstat_info"}

        def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
            return {
                name: after[name] - before.get(name, 0)
                for name in after
                if after[name] != before.get(name, 0)
            }

        document = {"instances": [[1], [2], [3]], "parameters": {"p": 1}}
        assert api.predict("echo", document)["X-Cache"] == "MISS"
        # This thread opens its connection for hits (HELLO, CLIENT) once; this hit is sampled too.
        assert api.predict("echo", document)["X-Cache"] == "HIT"
        before = commands()
        for _ in range(20):
            assert api.predict("echo", document)["X-Cache"] == "HIT"
        after = commands()
        assert delta(before, after) == {"cmdstat_mget": 20}

        runtime = get_runtime()
        namespace = runtime.keyspace.namespace(http_model.pk)
        digests = [digest_of("echo", [i], {"p": 1}) for i in (1, 2, 3)]
        assert runtime.hot.pending(namespace) == {digest: 21 for digest in digests}
        flush()  # the samples ride in the stats flush's one pipeline
        flushed = delta(after, commands())
        assert flushed["cmdstat_eval"] == 1 and flushed["cmdstat_hincrby"] >= 3  # one script per model
        hot = hot_set_read(runtime.client, runtime.keyspace, namespace)
        assert {(entry.digest, tuple(entry.instance)) for entry in hot} == {
            (digest, (i,)) for digest, i in zip(digests, (1, 2, 3), strict=True)
        }
        assert all(entry.parameters == {"p": 1} for entry in hot)
    finally:
        server.stop()


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["bypass", "disabled"])
def test_models_not_in_cache_mode_are_not_sampled(api, backend, http_model, every_hit_sampled, mode):
    model_upsert(name="echo", mode=mode)
    for _ in range(3):
        assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "BYPASS"
    assert get_runtime().hot.pending(get_runtime().keyspace.namespace(http_model.pk)) == {}


@pytest.mark.django_db
def test_misses_and_sampling_off_record_nothing_hot(api, backend, http_model, settings):
    settings.PREDCACHE_HOT_SAMPLE_RATE = 0
    for _ in range(3):
        api.predict("echo", {"instances": [[1]]})
    namespace = get_runtime().keyspace.namespace(http_model.pk)
    assert get_runtime().hot.pending(namespace) == {}

    settings.PREDCACHE_HOT_SAMPLE_RATE = 1
    assert api.predict("echo", {"instances": [[2]]})["X-Cache"] == "MISS"
    assert get_runtime().hot.pending(namespace) == {}


@pytest.mark.django_db
def test_the_admin_turns_the_hot_set_into_warm_sets(
    admin_client, api, backend, http_model, every_hit_sampled
):
    plain = {"instances": [[1], [2], [3]]}
    tuned = {"instances": [["x"]], "parameters": {"k": 1}}
    for document in (plain, tuned, plain, plain, tuned):
        api.predict("echo", document)
    flush()

    response = admin_client.post(
        "/admin/caching/modelendpoint/",
        {"action": "hot_set_to_warm_sets", "_selected_action": [http_model.pk]},
        follow=True,
    )

    assert response.status_code == 200
    sets = {warm_set.name: warm_set for warm_set in WarmSet.objects.filter(model=http_model)}
    tuned_name = hot_warm_set_name({"k": 1})
    assert sets.keys() == {"hot", tuned_name}
    assert sorted(sets["hot"].instances) == [[1], [2], [3]]
    assert sets["hot"].parameters is None and sets["hot"].instance_count == 3
    assert (sets[tuned_name].instances, sets[tuned_name].parameters) == ([["x"]], {"k": 1})
    text = response.content.decode()
    assert (
        "Hot set of echo saved: warm set &#x27;hot&#x27; created with 3 hot instances (no parameters)" in text
    )
    assert (
        f"warm set &#x27;{tuned_name}&#x27; created with 1 hot instance (parameters {{&quot;k&quot;:1}})"
        in text
    )

    # Again: the same sets get the instances hot now, and keep what the operator set on them.
    WarmSet.objects.filter(name="hot").update(every_seconds=600)
    api.predict("echo", {"instances": [[4]]})
    api.predict("echo", {"instances": [[4]]})
    flush()
    response = admin_client.post(
        "/admin/caching/modelendpoint/",
        {"action": "hot_set_to_warm_sets", "_selected_action": [http_model.pk]},
        follow=True,
    )
    replaced = WarmSet.objects.get(model=http_model, name="hot")
    assert sorted(replaced.instances) == [[1], [2], [3], [4]] and replaced.every_seconds == 600
    assert "&#x27;hot&#x27; replaced with 4 hot instances" in response.content.decode()


@pytest.mark.django_db
def test_the_admin_says_when_a_model_has_no_hot_set(admin_client, http_model):
    response = admin_client.post(
        "/admin/caching/modelendpoint/",
        {"action": "hot_set_to_warm_sets", "_selected_action": [http_model.pk]},
        follow=True,
    )
    assert "No hot set for echo yet" in response.content.decode()
    assert not WarmSet.objects.filter(model=http_model).exists()


@pytest.mark.django_db
def test_a_redis_refusing_scripts_still_gets_the_counters(
    api, backend, http_model, every_hit_sampled, settings, tmp_path
):
    """The samples ride in the stats flush: a Redis whose ACL forbids EVAL loses only the samples."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        settings.REDIS_URL = server.url
        redis.Redis.from_url(server.url).acl_setuser("default", enabled=True, commands=["-eval"], reset=False)
        for _ in range(2):
            api.predict("echo", {"instances": [[1]]})
        runtime = get_runtime()
        assert runtime.stats.flush(runtime.client, runtime.keyspace)
        stats = model_stats(model=http_model)
        assert (stats["requests"], stats["hits"], stats["hot_samples"]) == (2, 1, 1)
        assert hot_set_read(runtime.client, runtime.keyspace, runtime.keyspace.namespace(http_model.pk)) == []
    finally:
        server.stop()
