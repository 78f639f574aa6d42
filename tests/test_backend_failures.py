"""What clients see when a model server fails: fair breakers, clean messages, their own instance numbers.

Real model server processes (tests/support/model_server.py, kserve_server.py, fake_vertex.py)
that fail the way popular servers do; real Redis; requests through the API.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from caching.core.breaker import BreakerRegistry
from caching.runtime import get_runtime
from caching.services import model_upsert
from tests.conftest import ApiClient
from tests.support.processes import fake_vertex_server, free_port, server_process
from tests.test_vertex import ENDPOINT, FakeVertex

pytestmark = pytest.mark.django_db

# What no client may read in an error: tracebacks, source files and paths, object reprs.
INTERNALS = re.compile(r"Traceback|File \"|\.py\b|/srv/|site-packages|object at 0x|<[\w.]+ object")


class Clock:
    """A monotonic clock the test moves by hand, for the breakers' reset periods."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(settings: Any) -> Clock:
    """The model breakers of this process, with the test's clock: open after 2 failures for 10 s."""
    clock = Clock()
    get_runtime().cache.backend_breakers = BreakerRegistry(failure_threshold=2, reset_seconds=10, clock=clock)
    return clock


@pytest.fixture
def other_client(api_key: str) -> ApiClient:
    """A second client application with the same key: another team calling the same model."""
    return ApiClient(api_key)


@pytest.fixture(scope="module")
def fake_vertex_url() -> Any:
    with fake_vertex_server() as url:
        yield url


@pytest.fixture
def fake_vertex(fake_vertex_url: str) -> FakeVertex:
    server = FakeVertex(fake_vertex_url)
    server.reset()
    return server


def error_of(response: Any) -> dict[str, str]:
    assert response["Content-Type"] == "application/json"
    return response.json()["error"]


# --- one client's bad input never takes the model away from the others --------------------------


def test_instances_a_server_answers_500_for_never_open_the_breaker(
    api, other_client, backend, http_model, clock
):
    for number in range(20):
        response = api.predict("echo", {"instances": [{"crash": f"X has 2 features, expected 4 ({number})"}]})
        assert response.status_code == 502, response.content
        assert error_of(response)["code"] == "backend_error"

    for number in range(20):
        response = other_client.predict("echo", {"instances": [{"ok": number}]})
        assert response.status_code == 200, response.content
    # The server dropped the connection after each 500: the requests that found it dead were resent.
    assert backend._http.request("GET", f"{backend.base_url}/calls").json()["dropped"] > 0


def test_alternating_bad_and_valid_requests_all_valid_ones_succeed(
    api, other_client, backend, http_model, clock
):
    for number in range(24):
        bad = api.predict("echo", {"instances": [{"crash": "could not convert string to float"}]})
        good = other_client.predict("echo", {"instances": [{"n": number}]})
        assert (bad.status_code, good.status_code) == (502, 200), good.content


@pytest.fixture(scope="module")
def uvicorn_url() -> Any:
    with server_process("tests.support.asgi_model_server") as url:
        yield url


def test_against_uvicorn_every_valid_request_succeeds_between_bad_ones(
    api, other_client, uvicorn_url, db, clock
):
    """Real uvicorn closes the connection after a 500 without saying so; ~1 request in 20 met it."""
    model_upsert(name="summer", backend="http", target=f"{uvicorn_url}/predict")
    for number in range(100):
        bad = api.predict("summer", {"instances": [["not a number"]]})
        good = other_client.predict("summer", {"instances": [[number, 1]]})
        assert bad.status_code == 502
        assert (
            error_of(bad)["message"]
            == "model server answered HTTP 500: ValueError: could not convert string to float: 'not a number'"
        )
        assert good.status_code == 200, good.content
        assert good.json()["predictions"] == [number + 1.0]


def test_a_server_refusing_connections_still_opens_the_breaker(api, db, clock):
    model_upsert(name="down", backend="http", target=f"http://127.0.0.1:{free_port()}/predict")
    statuses = [api.predict("down", {"instances": [[number]]}).status_code for number in range(3)]
    assert statuses == [503, 503, 503]
    response = api.predict("down", {"instances": [[9]]})
    assert "circuit open" in error_of(response)["message"]


def test_timeouts_open_the_breaker(api, backend, db, clock):
    model_upsert(name="slow", backend="http", target=backend.predict_url, timeout_seconds=0.2)
    backend.control(delay=1.0)
    assert [api.predict("slow", {"instances": [[n]]}).status_code for n in range(2)] == [504, 504]
    calls = len(backend.calls())
    response = api.predict("slow", {"instances": [[7]]})
    assert response.status_code == 503 and "circuit open" in error_of(response)["message"]
    assert len(backend.calls()) == calls  # failed fast, the model was not called


@pytest.mark.parametrize("status,answered", [(429, 503), (502, 503), (503, 503), (504, 504)])
def test_an_overloaded_or_unavailable_servers_statuses_open_the_breaker(
    api, backend, http_model, clock, status, answered
):
    backend.control(status=status, message="busy")
    assert [api.predict("echo", {"instances": [[n]]}).status_code for n in range(2)] == [answered] * 2
    calls = len(backend.calls())
    response = api.predict("echo", {"instances": [[9]]})
    assert response.status_code == 503 and "circuit open" in error_of(response)["message"]
    assert len(backend.calls()) == calls


@pytest.mark.parametrize("status", [400, 404, 422, 500, 501])
def test_statuses_one_request_can_cause_never_open_the_breaker(api, backend, http_model, clock, status):
    backend.control(status=status, message="no")
    for n in range(5):
        assert api.predict("echo", {"instances": [[n]]}).status_code in (400, 502)
    backend.reset()
    assert api.predict("echo", {"instances": [[9]]}).status_code == 200


def test_a_local_models_own_code_raising_never_opens_the_breaker(api, db, settings, tmp_path, clock):
    import joblib

    from tests.support.broken_model import ExplodingModel

    joblib.dump(ExplodingModel(), tmp_path / "broken.joblib")
    settings.PREDCACHE_MODEL_DIR = tmp_path
    get_runtime().cache.backend_breakers = BreakerRegistry(failure_threshold=2, reset_seconds=10, clock=clock)
    model_upsert(name="broken", backend="local", target="broken.joblib")
    for _ in range(5):
        response = api.predict("broken", {"instances": [[1, 2]]})
        assert response.status_code == 502
        assert error_of(response)["message"] == "broken failed (TypeError): the model's own code failed"


# --- the half-open probe ------------------------------------------------------------------------


def test_a_rejected_probe_hands_the_probe_to_the_next_request(api, backend, http_model, clock):
    backend.control(status=503, message="overloaded")
    assert [api.predict("echo", {"instances": [[n]]}).status_code for n in range(2)] == [503, 503]
    assert "circuit open" in error_of(api.predict("echo", {"instances": [[3]]}))["message"]
    backend.reset()  # the model has recovered
    clock.now += 11  # the breaker's reset period is over: the next request is the probe

    probe = api.predict("echo", {"instances": [{"reject": "wrong feature count"}]})
    assert probe.status_code == 400
    response = api.predict("echo", {"instances": [[4]]})  # at once, not a full period later
    assert response.status_code == 200, response.content
    assert response.json()["predictions"] == [{"echo": [4], "parameters": None}]


def test_while_the_breaker_is_open_invalid_v2_input_still_gets_its_400(api, kserve, db, clock):
    model_upsert(name="adder", backend="http", target=kserve.infer_url(), options={"protocol": "v2"})
    assert api.predict("adder", {"instances": [{"x": [1.0, 2.0, 3.0]}]}).status_code == 200
    kserve.control(status=503, message="overloaded")
    for n in range(2):
        assert api.predict("adder", {"instances": [{"x": [float(n), 0.0, 0.0]}]}).status_code == 503

    invalid = api.predict("adder", {"instances": [{"x": [1.0, 2.0, 3.0]}, {"nope": [1.0]}]})
    assert invalid.status_code == 400
    assert error_of(invalid)["message"].startswith("instance 1: ")
    valid = api.predict("adder", {"instances": [{"x": [5.0, 5.0, 5.0]}]})
    assert valid.status_code == 503 and "circuit open" in error_of(valid)["message"]


# --- clean error messages -----------------------------------------------------------------------


def test_a_traceback_from_the_model_server_never_reaches_the_client(api, backend, http_model, caplog):
    response = api.predict("echo", {"instances": [{"crash": "X has 2 features"}]})
    assert response.status_code == 502
    message = error_of(response)["message"]
    assert message == "model server answered HTTP 500"
    assert not INTERNALS.search(response.content.decode())
    assert "/srv/model/" in caplog.text  # the detail is in the server's log


def test_a_json_error_with_internals_is_cut_to_the_status(api, backend, http_model):
    backend.control(status=500, message='Traceback (most recent call last):\n  File "/app/main.py", line 3')
    response = api.predict("echo", {"instances": [[1]]})
    assert error_of(response)["message"] == "model server answered HTTP 500"


def test_the_model_servers_one_line_reason_is_kept(api, backend, http_model):
    backend.control(status=503, message="model is loading, retry in 30 seconds")
    response = api.predict("echo", {"instances": [[1]]})
    assert (
        error_of(response)["message"]
        == "model server answered HTTP 503: model is loading, retry in 30 seconds"
    )


def test_an_unreachable_server_is_described_without_object_reprs(api, db):
    model_upsert(name="down", backend="http", target=f"http://127.0.0.1:{free_port()}/predict")
    response = api.predict("down", {"instances": [[1]]})
    assert response.status_code == 503
    assert error_of(response)["message"] == "model server unreachable (connection refused)"
    assert not INTERNALS.search(response.content.decode())


def test_an_unreachable_vertex_endpoint_is_described_without_object_reprs(api, db):
    model_upsert(
        name="gone",
        backend="vertex",
        target="projects/p/locations/us-central1/endpoints/1",
        api_endpoint=f"http://127.0.0.1:{free_port()}",
        options={"transport": "rest"},
        timeout_seconds=1,
    )
    response = api.predict("gone", {"instances": [[1]]})
    assert response.status_code == 503
    assert error_of(response)["message"] == "Vertex AI unreachable (connection refused)"
    assert not INTERNALS.search(response.content.decode()), response.content


# --- instances numbered as the client sent them -------------------------------------------------


def test_an_upstream_400_numbers_the_instance_as_the_client_sent_it(api, backend, http_model):
    assert api.predict("echo", {"instances": [[1, 2, 3]]}).status_code == 200  # cached now
    response = api.predict("echo", {"instances": [[1, 2, 3], {"reject": "has 2 features, expected 3"}]})
    assert response.status_code == 400
    assert (
        error_of(response)["message"]
        == "model server answered HTTP 400: instance 1: has 2 features, expected 3"
    )
    assert backend.calls()[-1]["instances"] == [{"reject": "has 2 features, expected 3"}]  # misses only


def test_duplicates_and_hits_do_not_shift_upstream_numbers(api, backend, http_model):
    assert api.predict("echo", {"instances": [["a"], ["b"]]}).status_code == 200
    document = {"instances": [["a"], ["c"], ["c"], ["b"], {"reject": "bad"}]}
    response = api.predict("echo", document)
    assert error_of(response)["message"] == "model server answered HTTP 400: instance 4: bad"


def test_a_v2_servers_400_numbers_the_instance_as_the_client_sent_it(api, kserve, db):
    model_upsert(name="adder", backend="http", target=kserve.infer_url(), options={"protocol": "v2"})
    assert api.predict("adder", {"instances": [{"x": [1.0, 2.0, 3.0]}]}).status_code == 200
    kserve.control(status=400, message="instance 0: value out of range")
    response = api.predict("adder", {"instances": [{"x": [1.0, 2.0, 3.0]}, {"x": [9.0, 9.0, 9.0]}]})
    assert response.status_code == 400
    assert error_of(response)["message"] == "model server answered HTTP 400: instance 1: value out of range"


def test_vertexs_400_numbers_the_instance_as_the_client_sent_it(api, db, fake_vertex):
    model_upsert(
        name="vx",
        backend="vertex",
        target=ENDPOINT,
        api_endpoint=fake_vertex.base_url,
        options={"transport": "rest"},
    )
    assert api.predict("vx", {"instances": [[1.0, 2.0]]}).status_code == 200
    fake_vertex.control(fail=[400], message="instance 0: expected 3 values")
    response = api.predict("vx", {"instances": [[1.0, 2.0], [5.0]]})
    assert response.status_code == 400
    assert error_of(response)["message"] == "Vertex AI answered 400: instance 1: expected 3 values"
