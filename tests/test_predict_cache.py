"""The read-through cache end to end: real Redis, real HTTP model server, the public route."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from caching.models import ModelEndpoint
from caching.runtime import get_runtime
from caching.selectors import served_models_forget
from caching.services import model_upsert

pytestmark = pytest.mark.django_db


def test_repeat_instance_is_a_hit_and_backend_called_once(api, backend, http_model):
    document = {"instances": [{"x": 1, "y": [1, 2]}], "parameters": {"k": 3}}
    first = api.predict("echo", document)
    second = api.predict("echo", document)

    assert first.status_code == 200
    assert first["X-Cache"] == "MISS"
    assert second["X-Cache"] == "HIT"
    assert (second["X-Cache-Hits"], second["X-Cache-Misses"]) == ("1", "0")
    assert second.json() == first.json()
    assert first.json()["predictions"] == [{"echo": {"x": 1, "y": [1, 2]}, "parameters": {"k": 3}}]
    assert len(backend.calls()) == 1


def test_object_key_order_and_number_spelling_do_not_matter(api, backend, http_model):
    api.predict("echo", {"instances": [{"a": 1, "b": {"c": 2.0, "d": [3]}}]})
    reordered = api.predict("echo", {"instances": [{"b": {"d": [3.0], "c": 2}, "a": 1.0}]})

    assert reordered["X-Cache"] == "HIT"
    assert len(backend.calls()) == 1


@pytest.mark.parametrize(
    "changed",
    [
        {"instances": [{"a": 2}]},
        {"instances": [{"a": 1}], "parameters": {"temperature": 0.5}},
        {"instances": [{"a": "1"}]},
        {"instances": [{"a": True}]},
    ],
    ids=["value", "parameters", "string-vs-number", "bool-vs-number"],
)
def test_different_value_or_parameters_miss(api, backend, http_model, changed):
    api.predict("echo", {"instances": [{"a": 1}]})
    response = api.predict("echo", changed)

    assert response["X-Cache"] == "MISS"
    assert len(backend.calls()) == 2
    assert response.json()["predictions"][0]["echo"] == changed["instances"][0]


def test_different_model_version_misses(api, backend, http_model):
    api.predict("echo", {"instances": [[1, 2]]})
    model_upsert(name="echo", backend="http", target=backend.predict_url, model_version="v2")

    assert api.predict("echo", {"instances": [[1, 2]]})["X-Cache"] == "MISS"
    assert api.predict("echo", {"instances": [[1, 2]]})["X-Cache"] == "HIT"
    assert len(backend.calls()) == 2


def test_batch_of_six_with_two_cached_and_a_duplicate(api, backend, http_model):
    api.predict("echo", {"instances": [{"n": 1}, {"n": 2}]})
    backend.reset()

    batch = [{"n": 10}, {"n": 1}, {"n": 11}, {"n": 2}, {"n": 12}, {"n": 10}]
    response = api.predict("echo", {"instances": batch})

    assert response.status_code == 200
    assert response["X-Cache"] == "PARTIAL"
    assert (response["X-Cache-Hits"], response["X-Cache-Misses"]) == ("2", "4")
    assert [p["echo"] for p in response.json()["predictions"]] == batch
    calls = backend.calls()
    assert len(calls) == 1
    assert calls[0]["instances"] == [{"n": 10}, {"n": 11}, {"n": 12}]


@pytest.mark.parametrize("falsy", [0, None, False, "", [], {}, 0.0])
def test_falsy_predictions_are_cached_and_returned_unchanged(api, backend, http_model, falsy):
    document = {"instances": [{"return": falsy}]}
    first = api.predict("echo", document)
    second = api.predict("echo", document)

    assert first.json()["predictions"] == [falsy]
    assert second["X-Cache"] == "HIT"
    assert second.json()["predictions"] == [falsy]
    assert type(second.json()["predictions"][0]) is type(falsy)
    assert len(backend.calls()) == 1


def test_model_version_reported_by_backend_is_passed_through_and_cached(api, backend, http_model):
    backend.control(modelVersionId="7", deployedModelId="dm-1")
    miss = api.predict("echo", {"instances": [1]})
    hit = api.predict("echo", {"instances": [1]})

    for response in (miss, hit):
        assert response.json()["modelVersionId"] == "7"
        assert response.json()["deployedModelId"] == "dm-1"
    assert hit["X-Cache"] == "HIT"


def test_purge_makes_the_next_request_miss(api, backend, http_model, capsys):
    api.predict("echo", {"instances": [[1], [2]]})
    assert api.predict("echo", {"instances": [[1], [2]]})["X-Cache"] == "HIT"

    call_command("predcache", "purge", "echo")

    assert api.predict("echo", {"instances": [[1], [2]]})["X-Cache"] == "MISS"
    assert api.predict("echo", {"instances": [[1], [2]]})["X-Cache"] == "HIT"
    assert len(backend.calls()) == 2


def test_purge_of_a_version_nothing_serves_is_refused_and_changes_nothing(api, backend, http_model):
    from django.core.management import CommandError

    api.predict("echo", {"instances": [[1]]})
    with pytest.raises(CommandError, match="has not seen version 'some-other-version'"):
        call_command("predcache", "purge", "echo", "--version", "some-other-version")
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"

    call_command("predcache", "purge", "echo", "--version", "")  # the (unversioned) one it serves
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"


def test_purge_of_the_pinned_version(api, backend, http_model):
    from django.core.management import CommandError

    model_upsert(name="echo", backend="http", target=backend.predict_url, model_version="v7")
    api.predict("echo", {"instances": [[1]]})
    with pytest.raises(CommandError, match="pinned to version 'v7'"):
        call_command("predcache", "purge", "echo", "--version", "v6")
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"

    call_command("predcache", "purge", "echo", "--version", "v7")
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"


def test_disabled_cache_passes_through(api, backend, http_model):
    model_upsert(name="echo", backend="http", target=backend.predict_url, mode="bypass")
    for _ in range(2):
        response = api.predict("echo", {"instances": [[1], [1]]})
        assert response["X-Cache"] == "BYPASS"
    assert len(backend.calls()) == 2
    assert backend.calls()[0]["instances"] == [[1], [1]]


def test_repointing_a_model_at_another_server_starts_a_fresh_cache(api, backend, http_model):
    api.predict("echo", {"instances": [[1]]})
    model_upsert(name="echo", backend="http", target=backend.predict_url + "?replica=2")

    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"


def _entry_keys(model):
    runtime = get_runtime()
    namespace = runtime.keyspace.namespace(model.pk)
    return runtime.client, [key for key in runtime.client.scan_iter(match=f"{namespace}:e:*")]


def test_entries_are_written_with_the_policy_ttl(api, backend, http_model):
    model_upsert(name="echo", backend="http", target=backend.predict_url, ttl_seconds=120)
    api.predict("echo", {"instances": [[1], [2]]})

    client, keys = _entry_keys(http_model)
    assert len(keys) == 2
    assert all(110 < client.ttl(key) <= 120 for key in keys)


def test_a_lost_generation_key_never_revives_purged_entries(api, backend, http_model):
    """Even if Redis evicts the generation key after a purge, purged entries stay unserved."""
    api.predict("echo", {"instances": [[1]]})
    call_command("predcache", "purge", "echo")
    runtime = get_runtime()
    runtime.client.delete(runtime.keyspace.generation(runtime.keyspace.namespace(http_model.pk)))

    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"


def test_corrupt_entry_is_a_miss_and_is_replaced(api, backend, http_model, caplog):
    api.predict("echo", {"instances": [[1]]})
    client, [key] = _entry_keys(http_model)
    client.set(key, b"\x01\x00garbage")

    response = api.predict("echo", {"instances": [[1]]})
    assert response["X-Cache"] == "MISS"
    assert response.json()["predictions"] == [{"echo": [1], "parameters": None}]
    assert "undecodable cache entry" in caplog.text
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"


@pytest.mark.parametrize(
    "status,code",
    [
        (500, "backend_error"),
        (503, "backend_unavailable"),
        (504, "backend_timeout"),
        (400, "invalid_instances"),
    ],
)
def test_backend_failures_map_to_json_errors_and_store_nothing(api, backend, http_model, status, code):
    backend.control(status=status, message="model exploded")
    response = api.predict("echo", {"instances": [[1]]})
    assert response.status_code == {500: 502}.get(status, status)
    assert response.json()["error"]["code"] == code
    assert "model exploded" in response.json()["error"]["message"]

    backend.control()
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"


def test_misconfigured_model_is_a_502_not_a_500(api, http_model):
    ModelEndpoint.objects.filter(pk=http_model.pk).update(target="ftp://nowhere")
    served_models_forget()
    response = api.predict("echo", {"instances": [[1]]})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "backend_misconfigured"


def test_a_purge_landing_while_a_miss_is_computed_is_not_undone(api, backend, http_model):
    """The miss that was already at the model when the purge landed must not refill the cache."""
    import threading

    from caching.selectors import served_model_get
    from tests.support.processes import wait_until

    served = served_model_get(name="echo")
    cache = get_runtime().cache
    backend.control(hold=True)
    answers = []
    in_flight = threading.Thread(
        target=lambda: answers.append(cache.predict(served.spec, served.backend, [[1]], None))
    )
    in_flight.start()
    try:
        wait_until(lambda: len(backend.calls()) == 1, timeout=10, what="the miss to reach the model")
        call_command("predcache", "purge", "echo")
    finally:
        backend.release()
        in_flight.join(timeout=10)
    assert answers[0].cache_status == "MISS"

    backend.control()
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"
    assert len(backend.calls()) == 2


def test_changing_model_options_starts_a_fresh_cache(api, local_model):
    instance = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
    labels = api.predict("iris", instance)
    model_upsert(name="iris", backend="local", target=local_model.target, options={"method": "predict_proba"})

    probabilities = api.predict("iris", instance)
    assert probabilities["X-Cache"] == "MISS"
    assert labels.json()["predictions"] == [0]
    assert len(probabilities.json()["predictions"][0]) == 3
    assert api.predict("iris", instance)["X-Cache"] == "HIT"


def test_replacing_a_local_model_file_starts_a_fresh_cache(
    api, local_model, iris_model_file, settings, tmp_path
):
    """A retrained model under the same file name must not be answered from the old one's entries."""
    import shutil

    from scripts.train_demo_model import train

    settings.PREDCACHE_MODEL_DIR = tmp_path
    shutil.copy(iris_model_file, tmp_path / "iris.joblib")
    served_models_forget()
    instance = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
    assert api.predict("iris", instance)["X-Cache"] == "MISS"
    assert api.predict("iris", instance)["X-Cache"] == "HIT"

    train(tmp_path / "iris.joblib")  # the same file name, written again
    served_models_forget()

    assert api.predict("iris", instance)["X-Cache"] == "MISS"
