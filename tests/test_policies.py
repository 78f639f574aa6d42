"""Per-model policies and request directives, against real Redis and the real model server.

Where a test needs time to pass (an entry to expire), it ages the stored entries instead of
sleeping: their creation and freshness times are moved back, as if that time had passed.
"""

from __future__ import annotations

import pytest

from caching.core.codec import FLAG_ZSTD, decode, encode
from caching.runtime import get_runtime
from caching.services import model_upsert
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db


def upsert(backend, **policy):
    model, _ = model_upsert(name="echo", backend="http", target=backend.predict_url, **policy)
    return model


def entry_keys(model):
    runtime = get_runtime()
    namespace = runtime.keyspace.namespace(model.pk)
    return runtime.client, list(runtime.client.scan_iter(match=f"{namespace}:e:*"))


def age_entries(model, seconds):
    """Make every stored entry of ``model`` ``seconds`` older, keeping its Redis expiry."""
    from dataclasses import replace

    client, keys = entry_keys(model)
    for key in keys:
        entry = decode(client.get(key))
        older = replace(
            entry,
            created_at=entry.created_at - seconds,
            fresh_until=None if entry.fresh_until is None else entry.fresh_until - seconds,
        )
        client.set(key, encode(older), keepttl=True)
    return len(keys)


def echo(response):
    return [p["echo"] for p in response.json()["predictions"]]


# --- TTL and jitter ------------------------------------------------------------------------


def test_jitter_spreads_expiry_within_the_ttl(api, backend, http_model):
    model = upsert(backend, ttl_seconds=1000, ttl_jitter=0.5)
    api.predict("echo", {"instances": [[i] for i in range(30)]})
    client, keys = entry_keys(model)
    ttls = [client.ttl(key) for key in keys]
    assert len(ttls) == 30
    assert all(490 <= ttl <= 1000 for ttl in ttls)
    assert len(set(ttls)) > 10  # not all together


def test_an_entry_past_its_ttl_is_a_miss(api, backend, http_model):
    model = upsert(backend, ttl_seconds=60)
    api.predict("echo", {"instances": [[1]]})
    age_entries(model, 61)
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"


# --- stale-while-revalidate and stale-if-error ----------------------------------------------


def test_stale_while_revalidate_serves_at_once_and_refreshes_once_in_the_background(api, backend, http_model):
    model = upsert(backend, ttl_seconds=60, stale_while_revalidate_seconds=300)
    api.predict("echo", {"instances": [[1]]})
    age_entries(model, 100)  # 40 s past its TTL, within the 300 s window
    backend.control(delay=0.3)

    stale = [api.predict("echo", {"instances": [[1]]}) for _ in range(5)]

    assert all(r["X-Cache"] == "STALE" for r in stale[:1])
    assert int(stale[0]["Age"]) >= 100
    assert all(echo(r) == [[1]] for r in stale)
    wait_until(lambda: len(backend.calls()) == 2, timeout=10, what="the background refresh")
    wait_until(
        lambda: api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT",
        timeout=10,
        what="the fresh entry",
    )
    fresh = api.predict("echo", {"instances": [[1]]})
    assert int(fresh["Age"]) < 60
    assert len(backend.calls()) == 2  # one refresh for all those stale requests


def test_stale_if_error_serves_an_expired_entry_when_the_model_fails(api, backend, http_model):
    model = upsert(backend, ttl_seconds=60, stale_if_error_seconds=3600)
    api.predict("echo", {"instances": [[1]]})
    age_entries(model, 600)
    backend.control(status=503, message="model down")

    response = api.predict("echo", {"instances": [[1]]})

    assert response.status_code == 200
    assert response["X-Cache"] == "STALE"
    assert int(response["Age"]) >= 600
    assert echo(response) == [[1]]


def test_with_nothing_stale_a_failing_model_is_an_error(api, backend, http_model):
    model = upsert(backend, ttl_seconds=60, stale_if_error_seconds=3600)
    api.predict("echo", {"instances": [[1]]})
    age_entries(model, 600)
    backend.control(status=503, message="model down")

    response = api.predict("echo", {"instances": [[1], [2]]})  # [2] has nothing stale

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "backend_unavailable"


def test_past_the_stale_if_error_window_the_error_reaches_the_client(api, backend, http_model):
    model = upsert(backend, ttl_seconds=60, stale_if_error_seconds=100)
    api.predict("echo", {"instances": [[1]]})
    age_entries(model, 600)
    backend.control(status=500, message="model broke")
    assert api.predict("echo", {"instances": [[1]]}).status_code == 502


# --- key rules ------------------------------------------------------------------------------


def test_rounding_makes_nearby_numbers_share_an_entry_and_only_those(api, backend, http_model):
    upsert(backend, round_decimals=2)
    first = api.predict("echo", {"instances": [{"x": 1.2341, "y": [0.5]}]})
    near = api.predict("echo", {"instances": [{"x": 1.2338, "y": [0.5001]}]})
    far = api.predict("echo", {"instances": [{"x": 1.2450, "y": [0.5]}]})

    assert near["X-Cache"] == "HIT"
    assert near.json()["predictions"] == first.json()["predictions"]
    assert far["X-Cache"] == "MISS"
    assert backend.calls()[0]["instances"] == [{"x": 1.2341, "y": [0.5]}]  # the model gets the original


def test_significant_digit_rounding(api, backend, http_model):
    upsert(backend, round_significant=3)
    api.predict("echo", {"instances": [[123456.0, 0.00123456]]})
    assert api.predict("echo", {"instances": [[123400, 0.0012344]]})["X-Cache"] == "HIT"
    assert api.predict("echo", {"instances": [[124000, 0.00123]]})["X-Cache"] == "MISS"


def test_ignored_fields_are_left_out_of_the_key_and_only_they(api, backend, http_model):
    upsert(backend, ignore_fields=["request_id", "meta.trace"])
    api.predict("echo", {"instances": [{"q": "a", "request_id": 1, "meta": {"trace": "t1", "lang": "en"}}]})

    same = api.predict(
        "echo", {"instances": [{"q": "a", "request_id": 2, "meta": {"trace": "t2", "lang": "en"}}]}
    )
    other = api.predict(
        "echo", {"instances": [{"q": "a", "request_id": 2, "meta": {"trace": "t2", "lang": "fr"}}]}
    )

    assert same["X-Cache"] == "HIT"
    assert other["X-Cache"] == "MISS"


def test_changing_a_key_rule_starts_a_fresh_cache(api, backend, http_model):
    api.predict("echo", {"instances": [[1.0]]})
    upsert(backend, round_decimals=1)
    assert api.predict("echo", {"instances": [[1.0]]})["X-Cache"] == "MISS"


# --- admission, size, compression, max age, modes ----------------------------------------------


def test_admission_stores_an_instance_only_after_k_requests(api, backend, http_model):
    upsert(backend, admit_after=3)
    statuses = [api.predict("echo", {"instances": [[7]]})["X-Cache"] for _ in range(4)]
    assert statuses == ["MISS", "MISS", "MISS", "HIT"]
    assert len(backend.calls()) == 3


def test_predictions_over_the_size_limit_are_served_but_not_stored(api, backend, http_model):
    upsert(backend, max_entry_bytes=200)
    big = {"instances": [{"return": "x" * 1000}]}
    small = {"instances": [{"return": "x"}]}
    for _ in range(2):
        assert api.predict("echo", big)["X-Cache"] == "MISS"
    assert api.predict("echo", big).json()["predictions"] == ["x" * 1000]
    api.predict("echo", small)
    assert api.predict("echo", small)["X-Cache"] == "HIT"


def test_zstd_compression_above_the_threshold(api, backend, http_model):
    model = upsert(backend, compress_over_bytes=100, compression="zstd")
    document = {"instances": [{"return": ["word"] * 500}]}
    api.predict("echo", document)

    client, [key] = entry_keys(model)
    raw = client.get(key)
    assert raw[1] & FLAG_ZSTD
    assert len(raw) < 500
    hit = api.predict("echo", document)
    assert hit["X-Cache"] == "HIT"
    assert hit.json()["predictions"] == [["word"] * 500]


def test_max_age_rule_stops_old_entries_whatever_their_ttl(api, backend, http_model):
    model = upsert(backend, ttl_seconds=86400, max_age_seconds=300)
    api.predict("echo", {"instances": [[1]]})
    age_entries(model, 200)
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"
    age_entries(model, 200)
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"


@pytest.mark.parametrize("mode", ["bypass", "disabled"])
def test_pass_through_modes(api, backend, http_model, mode):
    model = upsert(backend, mode=mode)
    for _ in range(2):
        response = api.predict("echo", {"instances": [[1]]})
        assert (response.status_code, response["X-Cache"]) == (200, "BYPASS")
    assert len(backend.calls()) == 2
    assert entry_keys(model)[1] == []


def test_disabled_mode_does_not_touch_redis(api, backend, http_model, settings, tmp_path):
    from tests.support.processes import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    try:
        settings.REDIS_URL = server.url
        upsert(backend, mode="disabled")
        import redis

        observer = redis.Redis.from_url(server.url)
        before = {k: v["calls"] for k, v in observer.info("commandstats").items() if k != "cmdstat_info"}
        assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "BYPASS"
        after = {k: v["calls"] for k, v in observer.info("commandstats").items() if k != "cmdstat_info"}
        assert after == before
    finally:
        server.stop()


# --- Cache-Control request directives -----------------------------------------------------------


def test_no_cache_recomputes_and_stores(api, backend, http_model):
    api.predict("echo", {"instances": [[1]]})
    recomputed = api.predict("echo", {"instances": [[1]]}, **{"Cache-Control": "no-cache"})
    assert recomputed["X-Cache"] == "MISS"
    assert recomputed["Cache-Status"].endswith("stored")
    assert len(backend.calls()) == 2
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"


def test_no_store_recomputes_and_stores_nothing(api, backend, http_model):
    response = api.predict("echo", {"instances": [[5]]}, **{"Cache-Control": "no-store"})
    assert response.status_code == 200
    assert api.predict("echo", {"instances": [[5]]})["X-Cache"] == "MISS"
    assert len(backend.calls()) == 2


def test_max_age_directive_accepts_only_younger_entries(api, backend, http_model):
    api.predict("echo", {"instances": [[1]]})
    age_entries(http_model, 30)
    young_enough = api.predict("echo", {"instances": [[1]]}, **{"Cache-Control": "max-age=60"})
    too_old = api.predict("echo", {"instances": [[1]]}, **{"Cache-Control": "max-age=10"})
    assert young_enough["X-Cache"] == "HIT"
    assert int(young_enough["Age"]) >= 30
    assert too_old["X-Cache"] == "MISS"


def test_min_fresh_directive_recomputes_entries_about_to_expire(api, backend, http_model):
    upsert(backend, ttl_seconds=100)
    api.predict("echo", {"instances": [[1], [2]]})
    age_entries(http_model, 70)  # 30 seconds of freshness left
    backend.reset_calls()

    fresh_enough = api.predict("echo", {"instances": [[1], [2]]}, **{"Cache-Control": "min-fresh=20"})
    too_close = api.predict("echo", {"instances": [[2], [3]]}, **{"Cache-Control": "min-fresh=40"})
    renewed = api.predict("echo", {"instances": [[2]]}, **{"Cache-Control": "min-fresh=90"})

    assert fresh_enough["X-Cache"] == "HIT"
    assert (too_close["X-Cache"], too_close["Cache-Status"]) == ("MISS", "predcache; fwd=miss; stored")
    assert echo(too_close) == [[2], [3]]
    assert [call["instances"] for call in backend.calls()] == [[[2], [3]]]
    assert renewed["X-Cache"] == "HIT"  # stored again, fresh for the whole TTL


def test_min_fresh_never_serves_a_stale_entry(api, backend, http_model):
    upsert(backend, ttl_seconds=100, stale_while_revalidate_seconds=300)
    api.predict("echo", {"instances": [[1]]})
    age_entries(http_model, 150)  # expired, within stale-while-revalidate

    assert api.predict("echo", {"instances": [[1]]}, **{"Cache-Control": "min-fresh=0"})["X-Cache"] == "MISS"
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"


def test_min_fresh_counts_the_models_max_age_too(api, backend, http_model):
    upsert(backend, ttl_seconds=1000, max_age_seconds=100)
    api.predict("echo", {"instances": [[1]]})
    age_entries(http_model, 70)  # fresh for 930 s more, but retired by max age in 30 s

    assert api.predict("echo", {"instances": [[1]]}, **{"Cache-Control": "min-fresh=20"})["X-Cache"] == "HIT"
    assert api.predict("echo", {"instances": [[1]]}, **{"Cache-Control": "min-fresh=40"})["X-Cache"] == "MISS"


def test_only_if_cached(api, backend, http_model):
    missing = api.predict("echo", {"instances": [[1], [2]]}, **{"Cache-Control": "only-if-cached"})
    assert missing.status_code == 504
    assert missing.json()["error"]["code"] == "not_cached"
    assert backend.calls() == []

    api.predict("echo", {"instances": [[1], [2]]})
    cached = api.predict("echo", {"instances": [[2], [1]]}, **{"Cache-Control": "only-if-cached"})
    assert (cached.status_code, cached["X-Cache"]) == (200, "HIT")


def test_hits_carry_an_age_header_and_misses_do_not(api, backend, http_model):
    miss = api.predict("echo", {"instances": [[1]]})
    age_entries(http_model, 12)
    hit = api.predict("echo", {"instances": [[1]]})
    assert "Age" not in miss
    assert 12 <= int(hit["Age"]) < 60


def test_unknown_or_malformed_directives_are_ignored(api, backend, http_model):
    api.predict("echo", {"instances": [[1]]})
    response = api.predict("echo", {"instances": [[1]]}, **{"Cache-Control": "max-age=abc, foo, =, private"})
    assert (response.status_code, response["X-Cache"]) == (200, "HIT")


# --- review fixes: client-sent edge values, exact integers, lock hygiene ---------------------


@pytest.mark.parametrize("value", ["max-age=\u00b2", "max-age=" + "9" * 5000, "max-age=-1", "max-age=1e3"])
def test_odd_max_age_values_never_fail(api, backend, http_model, value):
    api.predict("echo", {"instances": [[1]]})
    response = api.predict(
        "echo", {"instances": [[1]]}, **{"Cache-Control": value.encode("latin-1").decode("latin-1")}
    )
    assert response.status_code == 200


def test_rounding_never_merges_different_large_integers(api, backend, http_model):
    upsert(backend, round_decimals=2)
    api.predict("echo", {"instances": [{"id": 2**60 + 1}]})
    other = api.predict("echo", {"instances": [{"id": 2**60 + 3}]})
    assert other["X-Cache"] == "MISS"
    assert echo(other) == [{"id": 2**60 + 3}]


def test_a_model_raising_an_unexpected_error_is_a_502_and_frees_its_locks(api, db, settings, tmp_path):
    import joblib

    from tests.support.broken_model import ExplodingModel

    joblib.dump(ExplodingModel(), tmp_path / "broken.joblib")
    settings.PREDCACHE_MODEL_DIR = tmp_path
    model, _ = model_upsert(name="broken", backend="local", target="broken.joblib")

    response = api.predict("broken", {"instances": [[1, 2]]})

    assert response.status_code == 502
    assert "TypeError" in response.json()["error"]["message"]
    runtime = get_runtime()
    namespace = runtime.keyspace.namespace(model.pk)
    assert list(runtime.client.scan_iter(match=f"{namespace}:l:*")) == []


def _in_flight(backend, call):
    """Run ``call`` on a thread while the model server holds predict calls; returns (thread, answers)."""
    import threading

    answers = []
    thread = threading.Thread(target=lambda: answers.append(call()))
    thread.start()
    return thread, answers


def test_an_instance_purge_during_a_miss_keeps_that_answer_out_of_the_cache(
    api, backend, http_model, tmp_path
):
    from django.core.management import call_command

    from caching.selectors import served_model_get

    instances_file = tmp_path / "purge.jsonl"
    instances_file.write_text("[1]\n")
    served = served_model_get(name="echo")
    cache = get_runtime().cache
    backend.control(hold=True)
    thread, answers = _in_flight(backend, lambda: cache.predict(served.spec, served.backend, [[1]], None))
    try:
        wait_until(lambda: len(backend.calls()) == 1, timeout=10, what="the miss to reach the model")
        call_command("predcache", "purge", "echo", "--instances", str(instances_file), "--no-reclaim")
    finally:
        backend.release()
        thread.join(timeout=10)
    assert answers[0].cache_status == "MISS"
    backend.control()
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"


def test_a_waiter_gets_an_answer_that_was_not_yet_admitted_without_calling_the_model(
    api, backend, http_model
):
    from caching.selectors import served_model_get

    upsert(backend, admit_after=5)
    served = served_model_get(name="echo")
    cache = get_runtime().cache
    backend.control(hold=True)
    owner, first = _in_flight(backend, lambda: cache.predict(served.spec, served.backend, [[4]], None))
    try:
        wait_until(lambda: len(backend.calls()) == 1, timeout=10, what="the first miss to reach the model")
        waiter, second = _in_flight(backend, lambda: cache.predict(served.spec, served.backend, [[4]], None))
        wait_until(
            lambda: get_runtime().stats.pending(served.spec.namespace).get("single_flight_waits", 0) >= 1,
            timeout=10,
            what="the second request to wait",
        )
    finally:
        backend.release()
        owner.join(timeout=10)
    waiter.join(timeout=10)
    assert len(backend.calls()) == 1
    assert first[0].predictions == second[0].predictions == [{"echo": [4], "parameters": None}]


# --- the model's circuit breaker ----------------------------------------------------------------


def test_a_failing_model_trips_its_breaker_and_calls_stop(api, backend, http_model, settings):
    settings.PREDCACHE_BACKEND_BREAKER_FAILURES = 2
    settings.PREDCACHE_BACKEND_BREAKER_RESET_SECONDS = 60
    backend.control(status=503, message="model down")
    for instance in ([1], [2]):
        assert api.predict("echo", {"instances": [instance]}).status_code == 503

    tripped = api.predict("echo", {"instances": [[3]]})

    assert tripped.status_code == 503
    assert "circuit open" in tripped.json()["error"]["message"]
    assert len(backend.calls()) == 2  # the third request never reached the model


def test_while_the_breaker_is_open_stale_entries_are_served(api, backend, http_model, settings):
    settings.PREDCACHE_BACKEND_BREAKER_FAILURES = 1
    settings.PREDCACHE_BACKEND_BREAKER_RESET_SECONDS = 60
    model = upsert(backend, ttl_seconds=60, stale_if_error_seconds=3600)
    api.predict("echo", {"instances": [[1]]})
    age_entries(model, 120)
    backend.control(status=503)
    assert api.predict("echo", {"instances": [[2]]}).status_code == 503  # opens the breaker
    calls = len(backend.calls())

    response = api.predict("echo", {"instances": [[1]]})

    assert (response.status_code, response["X-Cache"]) == (200, "STALE")
    assert len(backend.calls()) == calls


def test_rejected_instances_do_not_trip_the_breaker(api, backend, http_model, settings):
    settings.PREDCACHE_BACKEND_BREAKER_FAILURES = 2
    backend.control(status=400, message="bad instance")
    for instance in ([1], [2], [3]):
        assert api.predict("echo", {"instances": [instance]}).status_code == 400
    assert len(backend.calls()) == 3
