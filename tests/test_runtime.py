"""The runtime: one per process, built once, dropped in a forked child (gunicorn and Celery fork)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from caching.runtime import get_runtime
from caching.services import model_upsert

pytestmark = pytest.mark.django_db


def _in_child(work: Any) -> Any:
    """Run ``work()`` in a forked child; returns what it returned (JSON), or raises its error."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running the parent's cleanup
        try:
            os.close(read_end)
            outcome = {"value": work()}
        except BaseException as exc:
            outcome = {"error": f"{type(exc).__name__}: {exc}"}
        with os.fdopen(write_end, "w") as out:
            out.write(json.dumps(outcome))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as answer:
        outcome = json.loads(answer.read() or '{"error": "the child said nothing"}')
    os.waitpid(pid, 0)
    if "error" in outcome:
        raise AssertionError(f"in the child: {outcome['error']}")
    return outcome["value"]


def test_a_forked_child_builds_its_own_runtime_with_its_own_connections(backend):
    runtime = get_runtime()
    parent_redis = runtime.client.client_id()
    runtime.http_pool.request("POST", backend.predict_url, json={"instances": [1]})
    parent_port = backend.peer_ports()[-1]

    def child() -> dict[str, Any]:
        mine = get_runtime()
        mine.http_pool.request("POST", backend.predict_url, json={"instances": [2]})
        return {"same_runtime": mine is runtime, "redis": mine.client.client_id()}

    seen = _in_child(child)

    assert seen["same_runtime"] is False
    assert seen["redis"] != parent_redis
    assert backend.peer_ports()[-1] != parent_port  # a new connection to the model server
    # The parent's own connections were left alone by the child.
    assert runtime.client.client_id() == parent_redis
    runtime.http_pool.request("POST", backend.predict_url, json={"instances": [3]})
    assert backend.peer_ports()[-1] == parent_port


def test_a_forked_child_serves_predictions_through_its_own_runtime(api, backend, http_model):
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"

    def child() -> str:
        from tests.conftest import ApiClient

        return str(ApiClient(api.key).predict("echo", {"instances": [[1]]})["X-Cache"])

    assert _in_child(child) == "HIT"


def test_backends_are_built_once_per_model_configuration(http_model, backend):
    from caching.selectors import served_model_get, served_models_forget

    first = served_model_get(name="echo")
    served_models_forget()  # as when PREDCACHE_CONFIG_CACHE_SECONDS passes
    again = served_model_get(name="echo")
    assert first is not None and again is not None and again is not first
    assert again.backend is first.backend  # the same backend, with its connections and metadata

    model_upsert(name="echo", timeout_seconds=7)  # another configuration: another backend
    changed = served_model_get(name="echo")
    assert changed is not None and changed.backend is not first.backend

    for seconds in range(8, 40):  # however often the settings change, one backend per model
        model_upsert(name="echo", timeout_seconds=seconds)
        served_model_get(name="echo")
    assert len(get_runtime().backends) == 1


def test_a_replaced_local_model_file_gets_a_new_backend(local_model, iris_model_file):
    from caching.selectors import served_model_get, served_models_forget

    first = served_model_get(name="iris")
    os.utime(iris_model_file, ns=(1, 1))  # "rewritten": another file version
    served_models_forget()
    again = served_model_get(name="iris")
    assert first is not None and again is not None
    assert again.backend is not first.backend
    assert again.spec.model_identity != first.spec.model_identity  # and a fresh cache
