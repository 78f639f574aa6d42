"""The vertex backend and the drop-in Vertex AI route, with the real aiplatform client.

A fake Vertex AI REST server runs as a separate process; predcache's vertex backend calls
it through google-cloud-aiplatform (REST transport, anonymous credentials over http), and
the unchanged SDK calls predcache the same way.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import urllib3

from caching.backends.base import BackendError, BackendRejectedInput, BackendTimeout, BackendUnavailable
from caching.backends.vertex import VertexBackend, regional_host
from caching.services import model_upsert
from tests.backends.contract import BackendContract
from tests.support.processes import REPO, fake_vertex_server

ENDPOINT = "projects/demo/locations/us-central1/endpoints/123"


class FakeVertex:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._http = urllib3.PoolManager()

    def reset(self) -> None:
        self._http.request("POST", f"{self.base_url}/reset", json={})

    def control(self, **settings: Any) -> None:
        self._http.request("POST", f"{self.base_url}/control", json=settings)

    def calls(self) -> list[dict[str, Any]]:
        return self._http.request("GET", f"{self.base_url}/calls").json()["calls"]


@pytest.fixture(scope="module")
def fake_vertex_url():
    with fake_vertex_server() as url:
        yield url


@pytest.fixture
def vertex(fake_vertex_url) -> FakeVertex:
    server = FakeVertex(fake_vertex_url)
    server.reset()
    return server


def vertex_backend(vertex: FakeVertex, **options: Any) -> VertexBackend:
    options.setdefault("timeout_seconds", 5)
    return VertexBackend(ENDPOINT, api_endpoint=vertex.base_url, transport="rest", **options)


@pytest.fixture
def vertex_model(db, vertex):
    model, _ = model_upsert(
        name="vx",
        backend="vertex",
        target=ENDPOINT,
        api_endpoint=vertex.base_url,
        timeout_seconds=5,
        options={"transport": "rest"},
    )
    return model


class TestVertexBackendContract(BackendContract):
    @pytest.fixture
    def backend(self, vertex):
        return vertex_backend(vertex)

    @pytest.fixture
    def instances(self):
        return [[1, 2], {"a": "b"}, "text", None, 3.5]

    @pytest.fixture
    def rejected_instances(self, vertex):
        vertex.control(fail=[400], message="instance 0: wrong shape")
        return [[1]]


def test_predictions_come_back_as_plain_json_with_the_version(vertex):
    result = vertex_backend(vertex).predict([[1, 2, 3], {"k": "v"}], {"top_k": 1})
    assert result.predictions == [{"sum": 6.0, "n": 3.0}, {"echo": {"k": "v"}}]
    assert (result.model_version_id, result.deployed_model_id) == ("1", "1111")
    [call] = vertex.calls()
    assert call["endpoint"] == ENDPOINT
    assert call["body"] == {"instances": [[1.0, 2.0, 3.0], {"k": "v"}], "parameters": {"top_k": 1.0}}


def test_an_oversized_batch_is_split_under_the_limit_and_merged_in_order(vertex):
    limit = 20_000
    instances = [[i] * 800 for i in range(12)]  # ~2.4 KB of JSON each once sent as doubles
    result = vertex_backend(vertex, max_request_bytes=limit).predict(instances, None)

    assert [p["sum"] for p in result.predictions] == [float(i * 800) for i in range(12)]
    calls = vertex.calls()
    assert len(calls) > 1
    assert all(call["bytes"] <= limit for call in calls)
    sent = [instance for call in calls for instance in call["body"]["instances"]]
    assert sent == [[float(x) for x in instance] for instance in instances]


@pytest.mark.parametrize(
    "failures,error",
    [([400], BackendRejectedInput), ([503] * 50, BackendUnavailable), ([429] * 50, BackendUnavailable)],
)
def test_upstream_errors_map_to_backend_errors(vertex, failures, error):
    vertex.control(fail=failures, message="upstream says no")
    with pytest.raises(error, match="upstream says no"):
        vertex_backend(vertex, timeout_seconds=1).predict([[1]], None)


def test_throttling_is_retried_and_a_400_is_not(vertex):
    vertex.control(fail=[429, 503])
    assert vertex_backend(vertex).predict([[1, 1]], None).predictions == [{"sum": 2.0, "n": 2.0}]
    assert len(vertex.calls()) == 3

    vertex.reset()
    vertex.control(fail=[400])
    with pytest.raises(BackendRejectedInput):
        vertex_backend(vertex).predict([[1]], None)
    assert len(vertex.calls()) == 1


def test_a_slow_endpoint_is_a_timeout(vertex):
    vertex.control(delay=2.0)
    with pytest.raises(BackendTimeout):
        vertex_backend(vertex, timeout_seconds=0.5).predict([[1]], None)


def test_the_regional_host_follows_the_location():
    backend = VertexBackend("projects/p/locations/europe-west4/endpoints/9", timeout_seconds=5)
    assert backend.api_endpoint == "europe-west4-aiplatform.googleapis.com"
    assert regional_host("global") == "aiplatform.googleapis.com"


def test_building_a_vertex_backend_imports_nothing_from_google():
    """The web process start and the hit path never pay for google-cloud-aiplatform's import."""
    code = (
        "import sys; from pathlib import Path; from caching.backends import BuildContext, build_backend;"
        f"build_backend('vertex', {ENDPOINT!r}, timeout_seconds=5, options={{}},"
        " context=BuildContext(Path('.')));"
        "heavy = ('google.cloud.aiplatform', 'google.api_core', 'google.protobuf', 'google.auth', 'grpc');"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# --- through predcache's routes ---------------------------------------------------------

pytestmark_db = pytest.mark.django_db


@pytest.mark.django_db
def test_repeat_is_a_hit_and_integer_and_float_spellings_share_an_entry(api, vertex, vertex_model):
    first = api.predict("vx", {"instances": [[1, 2, 3]]})
    second = api.predict("vx", {"instances": [[1.0, 2.0, 3.0]]})

    assert first["X-Cache"] == "MISS"
    assert second["X-Cache"] == "HIT"
    assert first.json()["predictions"] == second.json()["predictions"] == [{"sum": 6.0, "n": 3.0}]
    assert (second.json()["modelVersionId"], second.json()["deployedModelId"]) == ("1", "1111")
    assert len(vertex.calls()) == 1


@pytest.mark.django_db
def test_after_a_new_version_is_revealed_no_old_prediction_is_served(api, vertex, vertex_model):
    api.predict("vx", {"instances": [[1], [2]]})
    vertex.control(modelVersionId="2", deployedModelId="2222")

    revealing = api.predict("vx", {"instances": [[3], [1]]})
    assert revealing.json()["modelVersionId"] == "2"

    for instance in ([1], [2], [3]):
        response = api.predict("vx", {"instances": [instance]})
        assert response.json()["modelVersionId"] == "2"
        assert response.json()["deployedModelId"] == "2222"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "control,status,code",
    [
        ({"fail": [400]}, 400, "invalid_instances"),
        ({"fail": [503] * 50}, 503, "backend_unavailable"),
        ({"fail": [500]}, 502, "backend_error"),
        ({"delay": 2.0}, 504, "backend_timeout"),
    ],
)
def test_upstream_failures_reach_the_client_as_json_errors(api, vertex, vertex_model, control, status, code):
    model_upsert(name="vx", backend="vertex", target=ENDPOINT, timeout_seconds=0.5)
    vertex.control(message="upstream trouble", **control)
    response = api.predict("vx", {"instances": [[1]]})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


@pytest.mark.django_db
def test_the_vertex_route_answers_in_vertex_shape_from_the_same_cache(api, vertex, vertex_model):
    api.predict("vx", {"instances": [[4, 5]]})
    response = api.client.post(
        f"/v1/{ENDPOINT}:predict",
        data=b'{"instances": [[4.0, 5.0]]}',
        content_type="application/json",
        headers={"X-Goog-Api-Key": api.key},
    )
    assert response.status_code == 200
    assert response["X-Cache"] == "HIT"
    assert response.json() == {
        "predictions": [{"sum": 9.0, "n": 2.0}],
        "deployedModelId": "1111",
        "modelVersionId": "1",
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/v1/projects/demo/locations/us-central1/endpoints/999:predict",
        "/v1/projects/other/locations/us-central1/endpoints/123:predict",
        "/v1/projects/demo/locations/US%20central/endpoints/123:predict",
    ],
)
def test_the_vertex_route_for_an_unregistered_endpoint_is_a_json_404(api, vertex, vertex_model, path):
    response = api.client.post(
        path, data=b'{"instances": [1]}', content_type="application/json", headers={"X-Api-Key": api.key}
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert vertex.calls() == []


@pytest.mark.django_db
def test_the_vertex_route_needs_a_key(client, vertex, vertex_model):
    response = client.post(
        f"/v1/{ENDPOINT}:predict", data=b'{"instances": [1]}', content_type="application/json"
    )
    assert response.status_code == 401


@pytest.mark.django_db(transaction=True)
def test_the_unchanged_sdk_is_answered_from_the_cache(live_server, api_key, vertex, vertex_model):
    """An application using aiplatform switches to predcache by changing api_endpoint and adding a key."""
    from google.api_core.client_options import ClientOptions
    from google.cloud import aiplatform_v1
    from google.protobuf import json_format, struct_pb2

    client = aiplatform_v1.PredictionServiceClient(
        transport="rest", client_options=ClientOptions(api_endpoint=live_server.url, api_key=api_key)
    )
    instances = [
        json_format.ParseDict([1, 2, 3], struct_pb2.Value()),
        json_format.ParseDict([7], struct_pb2.Value()),
    ]

    first = client.predict(endpoint=ENDPOINT, instances=instances)
    again = client.predict(endpoint=ENDPOINT, instances=instances)

    for response in (first, again):
        document = json_format.MessageToDict(response._pb)
        assert document["predictions"] == [{"sum": 6.0, "n": 3.0}, {"sum": 7.0, "n": 1.0}]
        assert (document["modelVersionId"], document["deployedModelId"]) == ("1", "1111")
    assert len(vertex.calls()) == 1


@pytest.mark.django_db(transaction=True)
def test_the_high_level_sdk_endpoint_works_against_predcache(live_server, api_key, vertex, vertex_model):
    from google.api_core.client_options import ClientOptions
    from google.cloud import aiplatform_v1

    endpoints = aiplatform_v1.EndpointServiceClient(
        transport="rest", client_options=ClientOptions(api_endpoint=live_server.url, api_key=api_key)
    )
    predictions = aiplatform_v1.PredictionServiceClient(
        transport="rest", client_options=ClientOptions(api_endpoint=live_server.url, api_key=api_key)
    )
    from google.protobuf import json_format, struct_pb2

    predictions.predict(endpoint=ENDPOINT, instances=[json_format.ParseDict([1], struct_pb2.Value())])
    endpoint = endpoints.get_endpoint(name=ENDPOINT)
    assert endpoint.name == ENDPOINT
    assert endpoint.display_name == "vx"
    assert [(m.id, m.model_version_id) for m in endpoint.deployed_models] == [("1111", "1")]


# --- the default transport: gRPC --------------------------------------------------------


@pytest.fixture(scope="module")
def fake_vertex_grpc():
    from tests.support.processes import fake_vertex_grpc_server

    with fake_vertex_grpc_server() as (address, control_url):
        yield address, FakeVertex(control_url)


@pytest.fixture
def grpc_vertex(fake_vertex_grpc):
    address, control = fake_vertex_grpc
    control.reset()
    return address, control


def test_grpc_transport_predicts_with_the_version(grpc_vertex):
    address, control = grpc_vertex
    backend = VertexBackend(ENDPOINT, api_endpoint=address, timeout_seconds=5)
    assert backend.transport == "grpc"

    result = backend.predict([[1, 2, 3], "x"], {"k": 1})

    assert result.predictions == [{"sum": 6.0, "n": 3.0}, {"echo": "x"}]
    assert (result.model_version_id, result.deployed_model_id) == ("1", "1111")
    [call] = control.calls()
    assert call["endpoint"] == ENDPOINT
    assert call["body"]["instances"] == [[1.0, 2.0, 3.0], "x"]


def test_grpc_splits_oversized_batches_by_protobuf_size(grpc_vertex):
    address, control = grpc_vertex
    limit = 20_000
    instances = [[i] * 800 for i in range(8)]  # 800 doubles: ~7.2 KB of protobuf each
    result = VertexBackend(
        ENDPOINT, api_endpoint=address, timeout_seconds=5, max_request_bytes=limit
    ).predict(instances, None)
    assert [p["sum"] for p in result.predictions] == [float(i * 800) for i in range(8)]
    calls = control.calls()
    assert len(calls) > 1
    assert all(call["bytes"] <= limit for call in calls)


@pytest.mark.parametrize(
    "code,error",
    [(3, BackendRejectedInput), (14, BackendUnavailable), (8, BackendUnavailable)],
    ids=["INVALID_ARGUMENT", "UNAVAILABLE", "RESOURCE_EXHAUSTED"],
)
def test_grpc_status_codes_map_to_backend_errors(grpc_vertex, code, error):
    address, control = grpc_vertex
    control.control(fail=[code] * 50, message="grpc says no")
    with pytest.raises(error, match="grpc says no"):
        VertexBackend(ENDPOINT, api_endpoint=address, timeout_seconds=1).predict([[1]], None)


def test_grpc_unavailable_is_retried(grpc_vertex):
    address, control = grpc_vertex
    control.control(fail=[14, 8])
    result = VertexBackend(ENDPOINT, api_endpoint=address, timeout_seconds=5).predict([[2]], None)
    assert result.predictions == [{"sum": 2.0, "n": 1.0}]
    assert len(control.calls()) == 3


# --- review fixes: endpoint-side 400s, NaN answers, budgets ---------------------------------


def test_a_failed_precondition_is_the_endpoints_fault_not_the_clients(vertex):
    vertex.control(fail=[400], rpcStatus="FAILED_PRECONDITION", message="no model is deployed")
    with pytest.raises(BackendError, match="no model is deployed") as caught:
        vertex_backend(vertex).predict([[1]], None)
    assert not isinstance(caught.value, BackendRejectedInput)
    assert caught.value.status == 502


def test_grpc_failed_precondition_is_a_502(grpc_vertex):
    address, control = grpc_vertex
    control.control(fail=[9], message="no model is deployed")
    with pytest.raises(BackendError) as caught:
        VertexBackend(ENDPOINT, api_endpoint=address, timeout_seconds=5).predict([[1]], None)
    assert caught.value.status == 502


def test_an_answer_json_cannot_carry_is_a_502(vertex):
    vertex.control(nan=True)
    with pytest.raises(BackendError, match="JSON cannot carry") as caught:
        vertex_backend(vertex).predict([[1]], None)
    assert caught.value.status == 502


def test_parameters_count_toward_the_payload_limit(vertex):
    limit = 20_000
    parameters = {"vocabulary": ["w" * 50] * 100}  # ~6 KB of the budget, in every call
    vertex_backend(vertex, max_request_bytes=limit).predict([[i] * 400 for i in range(10)], parameters)
    calls = vertex.calls()
    assert len(calls) > 1
    assert all(call["bytes"] <= limit for call in calls)


def test_the_timeout_bounds_the_whole_request_not_each_call(vertex):
    """Nine calls of 0.4 s each cannot fit in a 1 s timeout: it stops after the ones that fit."""
    vertex.control(delay=0.4)
    instances = [[i] * 800 for i in range(9)]
    with pytest.raises(BackendTimeout):
        vertex_backend(vertex, timeout_seconds=1.0, max_request_bytes=12_000).predict(instances, None)
    assert len(vertex.calls()) <= 3


@pytest.mark.django_db(transaction=True)
def test_the_high_level_aiplatform_endpoint_predicts_through_predcache(
    live_server, api_key, vertex, vertex_model
):
    """``aiplatform.Endpoint(...).predict``: predcache's address and key are set in ``init`` only."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform
    from google.cloud.aiplatform import initializer

    config = initializer.global_config  # process-wide SDK settings: restore them afterwards
    saved = dict(vars(config))
    try:
        aiplatform.init(
            project="demo",
            location="us-central1",
            api_endpoint=live_server.url,
            api_transport="rest",
            credentials=AnonymousCredentials(),  # predcache is not Google: no token to send
            request_metadata=[("x-api-key", api_key)],
        )
        endpoint = aiplatform.Endpoint(ENDPOINT)
        first = endpoint.predict(instances=[[1, 2, 3]])
        second = endpoint.predict(instances=[[1, 2, 3]])
    finally:
        vars(config).clear()
        vars(config).update(saved)

    assert first.predictions == second.predictions == [{"sum": 6.0, "n": 3.0}]
    assert (second.deployed_model_id, second.model_version_id) == ("1111", "1")
    assert len(vertex.calls()) == 1
