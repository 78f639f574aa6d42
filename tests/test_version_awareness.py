"""The cache follows the model version the backend reports, and never serves another one's answers."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from caching.models import ModelVersionChange
from caching.services import model_upsert

pytestmark = pytest.mark.django_db


def versions(response):
    body = response.json()
    return body["modelVersionId"], body["deployedModelId"]


def test_a_new_version_stops_the_old_versions_entries_from_being_served(api, backend, http_model):
    backend.control(modelVersionId="1", deployedModelId="dm-a")
    api.predict("echo", {"instances": [[1], [2]]})
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"

    backend.control(modelVersionId="2", deployedModelId="dm-b")  # a new model is deployed
    # Nothing has revealed it yet: the cache still answers with version 1, and says so.
    still_old = api.predict("echo", {"instances": [[1]]})
    assert (still_old["X-Cache"], versions(still_old)) == ("HIT", ("1", "dm-a"))

    revealing = api.predict("echo", {"instances": [[3]]})
    assert versions(revealing) == ("2", "dm-b")

    for instance in ([1], [2]):
        response = api.predict("echo", {"instances": [instance]})
        assert response["X-Cache"] == "MISS"
        assert versions(response) == ("2", "dm-b")
    assert api.predict("echo", {"instances": [[1], [2], [3]]})["X-Cache"] == "HIT"


def test_the_revealing_request_recomputes_its_old_hits(api, backend, http_model):
    backend.control(modelVersionId="1", deployedModelId="dm-a")
    api.predict("echo", {"instances": [[1]]})
    backend.control(modelVersionId="2", deployedModelId="dm-b")
    backend.reset_calls()

    mixed = api.predict("echo", {"instances": [[1], [9]]})

    assert versions(mixed) == ("2", "dm-b")
    assert mixed["X-Cache"] == "MISS"
    assert [call["instances"] for call in backend.calls()] == [[[9]], [[1]]]


def test_a_version_change_is_recorded_once(api, backend, http_model):
    backend.control(modelVersionId="1", deployedModelId="dm-a")
    api.predict("echo", {"instances": [[1]]})
    backend.control(modelVersionId="2", deployedModelId="dm-b")
    api.predict("echo", {"instances": [[2]]})
    api.predict("echo", {"instances": [[3]]})

    changes = list(ModelVersionChange.objects.filter(model=http_model).order_by("observed_at"))
    assert [(c.previous_version, c.version) for c in changes] == [("", "dm-a/1"), ("dm-a/1", "dm-b/2")]
    assert changes[-1].model_version_id == "2"
    assert changes[-1].deployed_model_id == "dm-b"


def test_a_late_answer_from_a_retired_version_is_returned_but_not_stored(api, backend, http_model):
    """During a traffic split or a slow old replica, the old version cannot win the cache back."""
    backend.control(modelVersionId="1", deployedModelId="dm-a")
    api.predict("echo", {"instances": [[1]]})
    backend.control(modelVersionId="2", deployedModelId="dm-b")
    api.predict("echo", {"instances": [[2]]})

    backend.control(modelVersionId="1", deployedModelId="dm-a")  # the old deployment answers again
    old = api.predict("echo", {"instances": [[4]]})
    assert versions(old) == ("1", "dm-a")
    assert old["Cache-Status"] == "predcache; fwd=miss"  # not stored

    mixed = api.predict("echo", {"instances": [[2], [5]]})
    assert mixed["X-Cache"] == "PARTIAL"
    assert versions(mixed) == (None, None)  # predictions of two versions: neither is claimed
    assert api.predict("echo", {"instances": [[2]]})["X-Cache"] == "HIT"
    assert api.predict("echo", {"instances": [[4]]})["X-Cache"] == "MISS"


def test_purge_forgets_retired_versions_so_a_rollback_is_cached_again(api, backend, http_model):
    backend.control(modelVersionId="1", deployedModelId="dm-a")
    api.predict("echo", {"instances": [[1]]})
    backend.control(modelVersionId="2", deployedModelId="dm-b")
    api.predict("echo", {"instances": [[2]]})
    backend.control(modelVersionId="1", deployedModelId="dm-a")  # rolled back

    call_command("predcache", "purge", "echo")

    api.predict("echo", {"instances": [[1]]})
    response = api.predict("echo", {"instances": [[1]]})
    assert (response["X-Cache"], versions(response)) == ("HIT", ("1", "dm-a"))


def test_a_pinned_version_caches_only_that_versions_answers(api, backend, http_model):
    model_upsert(name="echo", backend="http", target=backend.predict_url, model_version="2")
    backend.control(modelVersionId="1", deployedModelId="dm-a")
    for _ in range(2):
        other = api.predict("echo", {"instances": [[1]]})
        assert other["X-Cache"] == "MISS"
        assert versions(other) == ("1", "dm-a")

    backend.control(modelVersionId="2", deployedModelId="dm-b")
    api.predict("echo", {"instances": [[1]]})
    backend.control(modelVersionId="1", deployedModelId="dm-a")  # the split sends us to v1 again
    pinned = api.predict("echo", {"instances": [[1]]})
    assert (pinned["X-Cache"], versions(pinned)) == ("HIT", ("2", "dm-b"))


def test_stats_show_the_followed_version_and_changes(api, backend, http_model, capsys):
    backend.control(modelVersionId="1", deployedModelId="dm-a")
    api.predict("echo", {"instances": [[1]]})
    backend.control(modelVersionId="2", deployedModelId="dm-b")
    api.predict("echo", {"instances": [[2]]})
    from caching.runtime import get_runtime

    get_runtime().stats.flush(get_runtime().client, get_runtime().keyspace)
    capsys.readouterr()
    call_command("predcache", "stats", "echo", "--json")
    import json

    stats = json.loads(capsys.readouterr().out)
    assert stats["version"] == "dm-b/2"
    assert stats["retired_versions"] == ["dm-a/1"]
    assert stats["version_changes"] == 2
    assert stats["last_version_change"]["version"] == "dm-b/2"


def test_plain_stats_name_the_versions_in_words(api, backend, http_model, capsys):
    backend.control(modelVersionId="1", deployedModelId="dm-a")
    api.predict("echo", {"instances": [[1]]})
    backend.control(modelVersionId="2", deployedModelId="dm-b")
    api.predict("echo", {"instances": [[2]]})
    capsys.readouterr()

    call_command("predcache", "stats", "echo")

    lines = {line.split("  ")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["version followed"].endswith("  dm-b/2")
    assert lines["retired versions"].endswith("  dm-a/1")
    assert " dm-a/1 -> dm-b/2 at " in lines["last version change"]


def test_a_version_moved_by_another_process_mid_request_does_not_mix_versions(api, backend, http_model):
    """Between this request's lookup and its save, another process moves the cache to v2."""
    import threading

    from caching.core.keys import version_tag
    from caching.runtime import get_runtime
    from caching.selectors import served_model_get
    from tests.support.processes import wait_until

    backend.control(modelVersionId="1", deployedModelId="dm-a")
    api.predict("echo", {"instances": [[1]]})
    served = served_model_get(name="echo")
    runtime = get_runtime()
    backend.control(modelVersionId="2", deployedModelId="dm-b", hold=True)
    backend.reset_calls()

    answers = []
    request = threading.Thread(
        target=lambda: answers.append(runtime.cache.predict(served.spec, served.backend, [[1], [9]], None))
    )
    request.start()
    try:
        wait_until(lambda: len(backend.calls()) == 1, timeout=10, what="the miss to reach the model")
        # What another process's save does when its answer reveals v2 first.
        other = runtime.store.lookup(served.spec.namespace, "", [])
        runtime.store.save(
            served.spec.namespace,
            other,
            [],
            version=version_tag("2", "dm-b"),
            follow_versions=True,
        )
    finally:
        backend.release()
        request.join(timeout=10)

    [answer] = answers
    assert (answer.model_version_id, answer.deployed_model_id) == ("2", "dm-b")
    assert [call["instances"] for call in backend.calls()] == [[[9]], [[1]]]


@pytest.mark.parametrize("name", ["2", "dm-b", "dm-b/2"])
def test_purge_of_the_followed_version_by_any_of_its_names(api, backend, http_model, capsys, name):
    backend.control(modelVersionId="1", deployedModelId="dm-a")
    api.predict("echo", {"instances": [[1]]})
    backend.control(modelVersionId="2", deployedModelId="dm-b")
    api.predict("echo", {"instances": [[2]]})
    assert api.predict("echo", {"instances": [[2]]})["X-Cache"] == "HIT"

    call_command("predcache", "purge", "echo", "--version", name)

    assert "purged version 'dm-b/2'" in capsys.readouterr().out
    assert api.predict("echo", {"instances": [[2]]})["X-Cache"] == "MISS"
    # The cache still follows v2 (a version purge is not a reset): v1 stays retired.
    backend.control(modelVersionId="1", deployedModelId="dm-a")
    assert api.predict("echo", {"instances": [[3]]})["Cache-Status"] == "predcache; fwd=miss"


def test_purge_of_a_retired_version_says_there_is_nothing_to_do(api, backend, http_model, capsys):
    backend.control(modelVersionId="1", deployedModelId="dm-a")
    api.predict("echo", {"instances": [[1]]})
    backend.control(modelVersionId="2", deployedModelId="dm-b")
    api.predict("echo", {"instances": [[2]]})
    capsys.readouterr()

    call_command("predcache", "purge", "echo", "--version", "1")

    assert "is retired" in capsys.readouterr().out
    assert api.predict("echo", {"instances": [[2]]})["X-Cache"] == "HIT"


@pytest.mark.parametrize("pin", ["dm-b", "dm-b/2"])
def test_a_version_can_be_pinned_by_deployed_model_or_full_tag(api, backend, http_model, pin):
    model_upsert(name="echo", backend="http", target=backend.predict_url, model_version=pin)
    backend.control(modelVersionId="2", deployedModelId="dm-c")  # same version number, another model
    api.predict("echo", {"instances": [[1]]})
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"

    backend.control(modelVersionId="2", deployedModelId="dm-b")
    api.predict("echo", {"instances": [[1]]})
    backend.control(modelVersionId="2", deployedModelId="dm-c")
    hit = api.predict("echo", {"instances": [[1]]})
    assert (hit["X-Cache"], versions(hit)) == ("HIT", ("2", "dm-b"))


def test_an_overlong_version_from_a_backend_is_recorded_clipped(api, backend, http_model):
    backend.control(modelVersionId="v" * 1000, deployedModelId="d" * 1000)
    response = api.predict("echo", {"instances": [[1]]})
    assert response.status_code == 200
    assert response.json()["modelVersionId"] == "v" * 1000  # the client still sees it whole
    [change] = ModelVersionChange.objects.filter(model=http_model)
    assert change.model_version_id == "v" * 128
    assert len(change.version) == 300
