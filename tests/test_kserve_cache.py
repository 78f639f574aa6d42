"""A KServe v2 (Open Inference Protocol) model behind the cache, through the public route."""

from __future__ import annotations

import pytest
import urllib3

from caching.services import model_upsert

pytestmark = pytest.mark.django_db


@pytest.fixture
def adder(db, kserve):
    model, _ = model_upsert(
        name="adder", backend="http", target=kserve.infer_url("adder"), options={"protocol": "v2"}
    )
    return model


def test_repeat_is_a_hit_and_number_spelling_shares_the_entry(api, kserve, adder):
    first = api.predict("adder", {"instances": [{"x": [1, 2, 3]}]})
    repeat = api.predict("adder", {"instances": [{"x": [1, 2, 3]}]})
    as_floats = api.predict("adder", {"instances": [{"x": [1.0, 2.0, 3.0]}]})

    assert first.status_code == 200
    assert first["X-Cache"] == "MISS"
    assert first.json()["predictions"] == [{"sum": 6.0, "doubled": [2.0, 4.0, 6.0]}]
    assert first.json()["modelVersionId"] == "3"
    assert (repeat["X-Cache"], as_floats["X-Cache"]) == ("HIT", "HIT")
    assert repeat.json() == first.json()
    assert as_floats.json() == first.json()
    (call,) = kserve.calls()
    assert call["inputs"][0]["datatype"] == "FP32"  # as the model's metadata declares


def test_only_the_misses_go_to_the_server_as_one_batched_tensor(api, kserve, adder):
    api.predict("adder", {"instances": [{"x": [1.0, 1.0]}]})
    kserve.reset()

    response = api.predict("adder", {"instances": [{"x": [2.0, 2.0]}, {"x": [1.0, 1.0]}, {"x": [3.0, 0.5]}]})

    assert response["X-Cache"] == "PARTIAL"
    assert response.json()["predictions"] == [
        {"sum": 4.0, "doubled": [4.0, 4.0]},
        {"sum": 2.0, "doubled": [2.0, 2.0]},
        {"sum": 3.5, "doubled": [6.0, 1.0]},
    ]
    (call,) = kserve.calls()
    assert call["inputs"] == [
        {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [2.0, 2.0, 3.0, 0.5]}
    ]


def test_metadata_is_asked_once_across_requests(api, kserve, adder):
    for value in (1.0, 2.0, 3.0):
        assert api.predict("adder", {"instances": [{"x": [value]}]}).status_code == 200

    assert len(kserve.calls()) == 3
    metadata = urllib3.request("GET", f"{kserve.base_url}/calls").json()["metadata"]
    assert metadata == ["/v2/models/adder"]


def test_parameters_reach_the_server_and_are_part_of_the_key(api, kserve, adder):
    api.predict("adder", {"instances": [{"x": [1.0]}], "parameters": {"priority": 1}})
    other = api.predict("adder", {"instances": [{"x": [1.0]}], "parameters": {"priority": 2}})

    assert other["X-Cache"] == "MISS"
    assert [call["parameters"] for call in kserve.calls()] == [{"priority": 1}, {"priority": 2}]


def test_a_ragged_instance_is_a_400_and_never_reaches_the_server(api, kserve, adder):
    response = api.predict("adder", {"instances": [{"x": [1.0, 2.0]}, {"x": [[1.0], [2.0, 3.0]]}]})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_instances"
    assert "instance 1: input 'x' is not a rectangular nested list" in error["message"]
    assert kserve.calls() == []


@pytest.mark.parametrize(
    "instances,number",
    [
        ([{"x": [1.0]}, {"x": [1.0], "y": [2.0]}], 1),
        ([{"x": [5.0]}, {"x": [1.0]}, {"x": [1.0]}, {"x": [1.0], "y": [2.0]}], 3),
    ],
    ids=["after-a-hit", "after-a-miss-and-repeated-hits"],
)
def test_a_rejected_instance_is_numbered_as_the_client_sent_it(api, kserve, adder, instances, number):
    """The backend sees only the distinct misses; the 400 names the client's own instance."""
    assert api.predict("adder", {"instances": [{"x": [1.0]}]})["X-Cache"] == "MISS"
    kserve.reset()

    response = api.predict("adder", {"instances": instances})

    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith(f"instance {number}: input 'y' is not one of the model's inputs ['x']")
    assert message.count("instance") == 1
    assert kserve.calls() == []


def test_a_model_without_metadata_is_served_with_fp64(api, kserve, db):
    model_upsert(
        name="undeclared", backend="http", target=kserve.infer_url("undeclared"), options={"protocol": "v2"}
    )
    first = api.predict("undeclared", {"instances": [{"x": [1, 2]}]})
    bad = api.predict("undeclared", {"instances": [{"x": [1, 2]}, {"x": [3, 4]}, {"x": [1, 2, 3]}]})

    assert first.json()["predictions"] == [{"sum": 3.0, "doubled": [2.0, 4.0]}]
    assert kserve.calls()[0]["inputs"][0]["datatype"] == "FP64"
    assert bad.status_code == 400
    assert bad.json()["error"]["message"].startswith(
        "instance 2: input 'x' has shape [3] but an earlier instance has [2]"
    )


def test_an_unready_model_is_a_503_with_the_servers_message(api, kserve, adder):
    kserve.control(status=503, message="model adder is loading")
    response = api.predict("adder", {"instances": [{"x": [1.0]}]})

    assert response.status_code == 503
    assert "model adder is loading" in response.json()["error"]["message"]


def test_an_unknown_protocol_is_refused_at_registration(db, kserve):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="known: row, v2"):
        model_upsert(name="bad", backend="http", target=kserve.infer_url("bad"), options={"protocol": "grpc"})
