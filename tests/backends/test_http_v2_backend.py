"""The ``http`` backend's Open Inference Protocol (KServe v2) mode against the real KServe test server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading

import pytest
import urllib3

from caching.backends import BuildContext, build_backend
from caching.backends.base import (
    BackendConfigError,
    BackendError,
    BackendMisconfigured,
    BackendRejectedInput,
    BackendUnavailable,
)
from caching.backends.http import HttpBackend
from caching.backends.open_inference import METADATA_REFRESH_SECONDS
from tests.backends.contract import BackendContract
from tests.support.kserve_server import UNDECLARED_MODEL
from tests.support.processes import REPO, free_port

X = {"name": "x", "datatype": "FP32", "shape": [-1, -1]}


def v2_backend(kserve, model="adder", version=None, **options):
    return HttpBackend(kserve.infer_url(model, version), timeout_seconds=5, protocol="v2", **options)


def metadata_requests(kserve):
    return urllib3.request("GET", f"{kserve.base_url}/calls").json()["metadata"]


def exact(document):
    """JSON text, so that 1 and 1.0 (equal in Python) compare different."""
    return json.dumps(document, sort_keys=True)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class TestHttpV2BackendContract(BackendContract):
    @pytest.fixture
    def backend(self, kserve):
        return v2_backend(kserve)

    @pytest.fixture
    def instances(self):
        return [{"x": [1.0, 2.0, 3.0]}, {"x": [0.5, -1.0, 4.0]}, {"x": [10.0, 0.0, 0.25]}]

    @pytest.fixture
    def rejected_instances(self):
        return [{"y": [1.0, 2.0]}]  # well formed, but the model declares no input "y"


class TestHttpV2WithoutMetadataContract(TestHttpV2BackendContract):
    @pytest.fixture
    def backend(self, kserve):
        return v2_backend(kserve, UNDECLARED_MODEL)

    @pytest.fixture
    def rejected_instances(self):
        return [{"y": [1.0, 2.0]}]  # nothing declared to check against: the server says 400


# --- with metadata ------------------------------------------------------------------------------


def test_a_batch_is_one_request_typed_as_the_metadata_declares(kserve):
    result = v2_backend(kserve).predict([{"x": [1.0, 2.0, 3.0]}, {"x": [4, 5, 6]}], None)

    (call,) = kserve.calls()
    assert exact(call) == exact(
        {
            "inputs": [
                {"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}
            ]
        }
    )
    assert result.predictions == [
        {"sum": 6.0, "doubled": [2.0, 4.0, 6.0]},
        {"sum": 15.0, "doubled": [8.0, 10.0, 12.0]},
    ]
    assert result.model_version_id == "3"


def test_int_and_float_spellings_send_the_identical_body_whatever_the_batchmates(kserve):
    backend = v2_backend(kserve)
    backend.predict([{"x": [1, 2, 3]}], None)
    backend.predict([{"x": [1.0, 2.0, 3.0]}], None)
    backend.predict([{"x": [1, 2, 3]}, {"x": [0.5, 1.5, 2.5]}], None)

    as_ints, as_floats, with_a_batchmate = kserve.calls()
    assert exact(as_ints) == exact(as_floats)
    assert exact(with_a_batchmate["inputs"][0]["data"][:3]) == exact(as_ints["inputs"][0]["data"])


@pytest.mark.parametrize(
    "datatype,values,data",
    [
        ("INT64", [[1, 2.0], [-3, 2**62]], [1, 2, -3, 2**62]),
        ("INT8", [[-128, 127.0], [0, 1]], [-128, 127, 0, 1]),
        ("UINT8", [[0, 255], [1.0, 2]], [0, 255, 1, 2]),
        ("FP16", [[1, 2], [0.5, -65504]], [1.0, 2.0, 0.5, -65504.0]),
        ("FP64", [[1, 0.1], [2**60, 3]], [1.0, 0.1, float(2**60), 3.0]),
        ("BOOL", [[True, False], [False, True]], [True, False, False, True]),
        ("BYTES", [["a", "b"], ["c", ""]], ["a", "b", "c", ""]),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_each_input_is_sent_as_its_declared_datatype(kserve, datatype, values, data):
    kserve.control(inputs=[X, {"name": "v", "datatype": datatype, "shape": [-1, 2]}])
    first, second = values
    v2_backend(kserve).predict([{"x": [1], "v": first}, {"x": [2], "v": second}], None)

    (call,) = kserve.calls()  # the server refuses any other datatype: it answered, so it agreed
    tensor = next(tensor for tensor in call["inputs"] if tensor["name"] == "v")
    assert exact(tensor) == exact({"name": "v", "shape": [2, 2], "datatype": datatype, "data": data})


@pytest.mark.parametrize(
    "datatype,value,message",
    [
        ("INT64", 1.5, "input 'v' holds 1.5, not a whole number as INT64 needs"),
        ("INT64", True, "input 'v' holds bool values, the model takes INT64"),
        ("INT64", 2**63, "input 'v' holds an integer outside the INT64 range"),
        ("INT8", 128, "outside the INT8 range"),
        ("UINT8", -1, "outside the UINT8 range"),
        ("UINT64", 2**64, "outside the UINT64 range"),
        ("FP32", "1.0", "input 'v' holds str values, the model takes FP32"),
        ("FP32", 1e39, "holds a number outside the FP32 range"),
        ("FP16", 65520, "holds a number outside the FP16 range"),
        ("FP64", 10**400, "holds a number outside the FP64 range"),
        ("FP32", None, "holds null values, the model takes FP32"),
        ("FP32", {"a": 1}, "holds object values, the model takes FP32"),
        ("BOOL", 1, "holds int values, the model takes BOOL"),
        ("BYTES", 1, "holds int values, the model takes BYTES"),
    ],
    ids=[
        "fraction-for-int",
        "bool-for-int",
        "int64-overflow",
        "int8-overflow",
        "negative-unsigned",
        "uint64-overflow",
        "string-for-float",
        "fp32-overflow",
        "fp16-overflow",
        "huge-int-for-fp64",
        "null",
        "object",
        "int-for-bool",
        "int-for-bytes",
    ],
)
def test_a_value_the_declared_datatype_cannot_hold_is_rejected_before_any_call(
    kserve, datatype, value, message
):
    kserve.control(inputs=[X, {"name": "v", "datatype": datatype, "shape": [-1, 2]}])
    with pytest.raises(BackendRejectedInput) as raised:
        v2_backend(kserve).predict([{"x": [1.0], "v": [value, value]}], None)

    assert message in str(raised.value)
    assert raised.value.instance == 0
    assert kserve.calls() == []


@pytest.mark.parametrize(
    "inputs,bad,message",
    [
        ([X], {"x": 1.0}, "input 'x' has shape [], the model takes [-1, -1] (batch dimension first)"),
        ([X], {"x": [[1.0], [2.0]]}, "input 'x' has shape [2, 1], the model takes [-1, -1]"),
        (
            [{**X, "shape": [-1, 2]}],
            {"x": [1.0, 2.0, 3.0]},
            "input 'x' has shape [3], the model takes [-1, 2]",
        ),
        ([X], {"x": [[1.0, 2.0], [3.0]]}, "input 'x' is not a rectangular nested list"),
        ([X], {"x": [1.0], "y": [1.0]}, "input 'y' is not one of the model's inputs ['x']"),
        ([X, {**X, "name": "w"}], {"x": [1.0]}, "input 'w' is missing (the model takes ['w', 'x'])"),
        ([X], [1.0], "a v2 instance is an object mapping input names to values"),
        ([X], {}, "a v2 instance is an object mapping input names to values"),
    ],
    ids=["scalar", "matrix", "fixed-dimension", "ragged", "unknown-input", "missing-input", "list", "empty"],
)
def test_instances_are_checked_against_the_metadata_and_blamed_by_index(kserve, inputs, bad, message):
    kserve.control(inputs=inputs)
    good = {"x": [1.0, 2.0]} | ({"w": [1.0, 2.0]} if len(inputs) == 2 else {})
    with pytest.raises(BackendRejectedInput) as raised:
        v2_backend(kserve).predict([good, bad], None)

    assert message in str(raised.value)
    assert not re.search(r"instance \d", str(raised.value))  # the read-through cache numbers it
    assert raised.value.instance == 1
    assert raised.value.status == 400
    assert kserve.calls() == []


def test_rows_of_a_variable_size_go_as_one_request_per_shape(kserve):
    """An instance valid alone stays valid beside a batchmate whose -1 dimension differs."""
    instances = [{"x": [1.0, 2.0]}, {"x": [1.0, 2.0, 3.0]}, {"x": [3.0, 4.0]}]
    result = v2_backend(kserve).predict(instances, None)

    assert [call["inputs"][0]["shape"] for call in kserve.calls()] == [[2, 2], [1, 3]]
    assert result.predictions == [
        {"sum": 3.0, "doubled": [2.0, 4.0]},
        {"sum": 6.0, "doubled": [2.0, 4.0, 6.0]},
        {"sum": 7.0, "doubled": [6.0, 8.0]},
    ]
    assert result.model_version_id == "3"
    assert result.cacheable


def test_tensors_follow_the_declared_order_and_keep_their_row_shapes(kserve):
    kserve.control(
        inputs=[
            {"name": "grid", "datatype": "INT64", "shape": [-1, 2, 3]},
            {"name": "scale", "datatype": "FP32", "shape": [-1]},
            X,
        ]
    )
    instances = [
        {"x": [1, 2], "scale": 0.5, "grid": [[1, 2, 3], [4, 5, 6]]},
        {"scale": 2, "x": [3, 4], "grid": [[7, 8, 9], [10, 11, 12.0]]},
    ]
    v2_backend(kserve).predict(instances, None)

    (call,) = kserve.calls()
    assert [(tensor["name"], tensor["shape"]) for tensor in call["inputs"]] == [
        ("grid", [2, 2, 3]),
        ("scale", [2]),
        ("x", [2, 2]),
    ]
    assert exact(call["inputs"][0]["data"]) == exact(list(range(1, 13)))
    assert exact(call["inputs"][1]["data"]) == exact([0.5, 2.0])


def test_a_declared_datatype_json_cannot_carry_is_the_operators_problem(kserve):
    kserve.control(inputs=[{**X, "datatype": "BF16"}])
    with pytest.raises(BackendMisconfigured, match="'BF16'"):
        v2_backend(kserve).predict([{"x": [1.0]}], None)


def test_parameters_are_forwarded_at_the_top_level(kserve):
    backend = v2_backend(kserve)
    backend.predict([{"x": [1.0]}], {"priority": 2, "tag": "a"})
    backend.predict([{"x": [1.0]}], None)

    with_parameters, without = kserve.calls()
    assert with_parameters["parameters"] == {"priority": 2, "tag": "a"}
    assert "parameters" not in without


def test_a_versioned_infer_url_is_called_and_its_metadata_asked(kserve):
    result = v2_backend(kserve, version="3").predict([{"x": [1.0]}], None)

    assert result.predictions == [{"sum": 1.0, "doubled": [2.0]}]
    assert kserve.paths() == ["/v2/models/adder/versions/3/infer"]
    assert metadata_requests(kserve) == ["/v2/models/adder/versions/3"]


# --- metadata caching ---------------------------------------------------------------------------


def test_metadata_is_asked_once_by_a_backend(kserve):
    backend = v2_backend(kserve)  # the runtime builds one per model configuration
    for value in (1.0, 2.0, 3.0):
        backend.predict([{"x": [value]}], None)

    assert len(kserve.calls()) == 3
    assert metadata_requests(kserve) == ["/v2/models/adder"]


def test_concurrent_first_predicts_ask_for_metadata_once(kserve):
    start = threading.Barrier(8)
    errors = []

    backend = v2_backend(kserve)

    def predict(value):
        start.wait()
        try:
            backend.predict([{"x": [value]}], None)
        except Exception as exc:  # surfaced below: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=predict, args=(float(value),)) for value in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(kserve.calls()) == 8
    assert metadata_requests(kserve) == ["/v2/models/adder"]


def test_a_400_asks_for_metadata_again_at_most_once_a_minute(kserve):
    clock = FakeClock()
    backend = v2_backend(kserve, clock=clock)
    redeployed = [{**X, "datatype": "FP64"}]
    backend.predict([{"x": [1.0]}], None)
    kserve.control(inputs=redeployed)

    clock.now = METADATA_REFRESH_SECONDS - 1
    for _ in range(2):
        with pytest.raises(
            BackendRejectedInput, match="data-type is 'FP32', but model 'adder' expects 'FP64'"
        ):
            backend.predict([{"x": [1.0]}], None)
    assert len(metadata_requests(kserve)) == 1

    clock.now = METADATA_REFRESH_SECONDS
    with pytest.raises(BackendRejectedInput):
        backend.predict([{"x": [1.0]}], None)
    result = backend.predict([{"x": [1.0]}], None)

    assert result.predictions == [{"sum": 1.0, "doubled": [2.0]}]
    assert kserve.calls()[-1]["inputs"][0]["datatype"] == "FP64"
    assert len(metadata_requests(kserve)) == 2

    kserve.control(inputs=redeployed, status=400, message="refused")
    clock.now += METADATA_REFRESH_SECONDS - 1
    for _ in range(2):
        with pytest.raises(BackendRejectedInput, match="refused"):
            backend.predict([{"x": [1.0]}], None)
    assert len(metadata_requests(kserve)) == 2


# --- without metadata ---------------------------------------------------------------------------


def test_without_metadata_numbers_are_fp64_whatever_their_spelling_or_batchmates(kserve):
    backend = v2_backend(kserve, UNDECLARED_MODEL)
    backend.predict([{"x": [1, 2, 3]}], None)
    backend.predict([{"x": [1.0, 2.0, 3.0]}], None)
    backend.predict([{"x": [1, 2, 3]}, {"x": [0.5, 1.5, 2.5]}], None)

    as_ints, as_floats, with_a_batchmate = kserve.calls()
    assert exact(as_ints) == exact(
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 2.0, 3.0]}]}
    )
    assert exact(as_floats) == exact(as_ints)
    assert exact(with_a_batchmate["inputs"][0]["data"][:3]) == exact(as_ints["inputs"][0]["data"])
    assert metadata_requests(kserve) == [f"/v2/models/{UNDECLARED_MODEL}"]  # a 404 is remembered


@pytest.mark.parametrize(
    "values,datatype,data",
    [
        ([[1, 2], [3, 4]], "FP64", [1.0, 2.0, 3.0, 4.0]),
        ([[True, False], [False, True]], "BOOL", [True, False, False, True]),
        ([["a", "b"], ["c", "d"]], "BYTES", ["a", "b", "c", "d"]),
    ],
    ids=["number", "bool", "string"],
)
def test_without_metadata_the_datatype_follows_the_kind_of_value(kserve, values, datatype, data):
    first, second = values
    v2_backend(kserve, UNDECLARED_MODEL).predict([{"x": [1], "v": first}, {"x": [1], "v": second}], None)

    (call,) = kserve.calls()
    tensor = next(tensor for tensor in call["inputs"] if tensor["name"] == "v")
    assert exact(tensor) == exact({"name": "v", "shape": [2, 2], "datatype": datatype, "data": data})


@pytest.mark.parametrize(
    "instances,message,blamed",
    [
        ([{"x": [1, 2]}, {"x": [1, 2, 3]}], "input 'x' has shape [3] but an earlier instance has [2]", 1),
        ([{"x": [1, 2]}, {"x": 1}], "input 'x' has shape [] but an earlier instance has [2]", 1),
        ([{"x": [1.0]}, {"x": ["a"]}], "input 'x' holds BYTES values but an earlier instance holds FP64", 1),
        ([{"x": [1]}, {"y": [1]}], "inputs ['y'] differ from an earlier instance's ['x']", 1),
        ([{"x": [1]}, {"x": [1], "y": [1]}], "inputs ['x', 'y'] differ", 1),
        ([{"x": [1]}, [1]], "a v2 instance is an object", 1),
        ([{}], "a v2 instance is an object", 0),
        ([{"x": [1]}, {"x": [[1, 2], [3]]}], "input 'x' is not a rectangular nested list", 1),
        ([{"x": [1, "a"]}], "input 'x' mixes int, str values", 0),
        ([{"x": [1, True]}], "input 'x' mixes bool, int values", 0),
        ([{"x": [1.0, None]}], "input 'x' holds null values", 0),
        ([{"x": [{"a": 1}]}], "input 'x' holds object values", 0),
        ([{"x": [10**400]}], "input 'x' holds a number outside the FP64 range", 0),
        ([{"x": [1]}, {"x": []}], "input 'x' holds no values", 1),
    ],
    ids=[
        "row-lengths-differ",
        "scalar-vs-list",
        "kinds-differ",
        "other-input-name",
        "extra-input",
        "list-instance",
        "empty-object",
        "ragged",
        "mixed-types",
        "bool-beside-int",
        "null",
        "object-value",
        "huge-int",
        "empty-tensor",
    ],
)
def test_without_metadata_later_instances_must_match_the_first(kserve, instances, message, blamed):
    with pytest.raises(BackendRejectedInput) as raised:
        v2_backend(kserve, UNDECLARED_MODEL).predict(instances, None)

    assert message in str(raised.value)
    assert not re.search(r"instance \d", str(raised.value))
    assert raised.value.instance == blamed
    assert kserve.calls() == []


def test_unusable_metadata_is_remembered_until_a_400_a_minute_later(kserve):
    clock = FakeClock()
    backend = v2_backend(kserve, clock=clock)
    kserve.control(metadata_raw="<html>gateway</html>")
    for _ in range(2):  # FP64 guessed; the model takes FP32
        with pytest.raises(BackendRejectedInput, match="expects 'FP32'"):
            backend.predict([{"x": [1.0]}], None)
    assert len(metadata_requests(kserve)) == 1

    kserve.control()  # the metadata route works again
    clock.now = METADATA_REFRESH_SECONDS
    with pytest.raises(BackendRejectedInput):
        backend.predict([{"x": [1.0]}], None)
    result = backend.predict([{"x": [1.0]}], None)

    assert result.predictions == [{"sum": 1.0, "doubled": [2.0]}]
    assert len(metadata_requests(kserve)) == 2


@pytest.mark.parametrize(
    "document",
    [
        {"name": "adder"},
        {"inputs": []},
        {"inputs": [["x", "FP32", [-1, -1]]]},
        {"inputs": [{"datatype": "FP32", "shape": [-1, -1]}]},
        {"inputs": [X, X]},
        {"inputs": [{**X, "datatype": None}]},
        {"inputs": [{**X, "shape": []}]},
        {"inputs": [{**X, "shape": [-1, -2]}]},
        {"inputs": [{**X, "shape": [-1, 2.0]}]},
    ],
    ids=[
        "no-inputs",
        "empty-inputs",
        "input-not-an-object",
        "nameless",
        "twice",
        "no-datatype",
        "no-batch-dimension",
        "negative-size",
        "float-size",
    ],
)
def test_malformed_metadata_falls_back_to_fp64(kserve, document):
    kserve.control(metadata_raw=json.dumps(document))
    with pytest.raises(BackendRejectedInput, match="data-type is 'FP64', but model 'adder' expects 'FP32'"):
        v2_backend(kserve).predict([{"x": [1.0]}], None)


def test_a_metadata_server_error_is_not_remembered(kserve):
    kserve.control(metadata_status=503)
    backend = v2_backend(kserve)
    with pytest.raises(BackendRejectedInput, match="expects 'FP32'"):
        backend.predict([{"x": [1.0]}], None)

    kserve.control()
    result = backend.predict([{"x": [1.0]}], None)  # asks again at once

    assert result.predictions == [{"sum": 1.0, "doubled": [2.0]}]
    assert kserve.calls()[-1]["inputs"][0]["datatype"] == "FP32"
    assert len(metadata_requests(kserve)) == 2


def test_an_unreachable_server_is_unavailable():
    backend = HttpBackend(
        f"http://127.0.0.1:{free_port()}/v2/models/m/infer", timeout_seconds=5, protocol="v2"
    )
    with pytest.raises(BackendUnavailable, match="unreachable"):
        backend.predict([{"x": [1.0]}], None)


# --- answers ------------------------------------------------------------------------------------


def test_the_servers_error_message_is_surfaced(kserve):
    with pytest.raises(BackendRejectedInput, match="model 'undeclared' expects 'x'"):
        v2_backend(kserve, UNDECLARED_MODEL).predict([{"y": [1.0]}], None)


def test_upstream_503_is_unavailable_with_its_message(kserve):
    kserve.control(status=503, message="model adder is not ready")
    with pytest.raises(BackendUnavailable, match="HTTP 503: model adder is not ready"):
        v2_backend(kserve).predict([{"x": [1.0]}], None)


def _output(name="sum", shape=(2,), data=(1.0, 2.0), datatype="FP64"):
    return {"name": name, "shape": list(shape), "datatype": datatype, "data": list(data)}


@pytest.mark.parametrize(
    "answer,message",
    [
        ({"model_name": "adder"}, "no 'outputs' list"),
        ({"outputs": []}, "no 'outputs' list"),
        ([1, 2], "no 'outputs' list"),
        ({"outputs": [{"shape": [2], "data": [1, 2]}]}, "an output without a name"),
        ({"outputs": [_output(shape=())]}, "output 'sum' has no valid shape"),
        ({"outputs": [_output(shape=(2, -1))]}, "output 'sum' has no valid shape"),
        ({"outputs": [_output(shape=(3,), data=(1, 2, 3))]}, "first dimension 3 for a batch of 2"),
        ({"outputs": [_output(data=(1.0,))]}, "output 'sum' has 1 values for shape [2]"),
        ({"outputs": [_output(shape=(2, 2), data=(1, 2, 3))]}, "has 3 values for shape [2, 2]"),
        ({"outputs": [_output(shape=(2, 2), data=([1, 2], [3]))]}, "data is not a rectangular nested list"),
        (
            {"outputs": [_output(shape=(2, 3), data=([1, 2], [3, 4], [5, 6]))]},
            "has 6 values for shape [2, 3]",
        ),
        ({"outputs": [{"name": "sum", "shape": [2], "parameters": {"binary_data_size": 16}}]}, "binary"),
        ({"outputs": [_output(data=(1.0, None))]}, "not numbers, booleans or strings"),
        ({"outputs": [_output(), _output()]}, "output 'sum' twice"),
    ],
    ids=[
        "no-outputs",
        "empty-outputs",
        "not-an-object",
        "nameless",
        "no-dimensions",
        "negative-dimension",
        "wrong-batch",
        "short-data",
        "product-mismatch",
        "ragged-nested-data",
        "nested-data-in-wrong-shape",
        "binary-data",
        "null-value",
        "duplicate-output",
    ],
)
def test_malformed_answers_are_backend_errors(kserve, answer, message):
    kserve.control(answer=answer)
    with pytest.raises(BackendError) as raised:
        v2_backend(kserve).predict([{"x": [1.0]}, {"x": [2.0]}], None)

    assert type(raised.value) is BackendError  # a 502: not blamed on the client
    assert message in str(raised.value)


def test_an_answer_that_is_not_json_is_a_backend_error(kserve):
    kserve.control(raw="<html>gateway</html>")
    with pytest.raises(BackendError, match="invalid JSON"):
        v2_backend(kserve).predict([{"x": [1.0]}], None)


def test_nested_output_data_is_accepted(kserve):
    """The protocol lets a server send tensor data nested instead of flat."""
    kserve.control(
        answer={
            "outputs": [_output(name="m", shape=(2, 2, 1), data=([[1], [2]], [[3], [4]]), datatype="INT64")]
        }
    )
    result = v2_backend(kserve).predict([{"x": [1.0]}, {"x": [2.0]}], None)

    assert result.predictions == [{"m": [[1], [2]]}, {"m": [[3], [4]]}]
    assert result.model_version_id is None


# --- configuration ------------------------------------------------------------------------------


def test_build_backend_takes_the_protocol_option(kserve):
    backend = build_backend(
        "http", kserve.infer_url(), timeout_seconds=5, options={"protocol": "v2"}, context=BuildContext(REPO)
    )
    assert backend.predict([{"x": [2.0]}], None).predictions == [{"sum": 2.0, "doubled": [4.0]}]


@pytest.mark.parametrize("options", [{"protocol": "v3"}, {"protocol": None}, {"protocol": ["v2"]}])
def test_build_backend_refuses_an_unknown_protocol(options):
    with pytest.raises(BackendConfigError, match="known: row, v2"):
        build_backend(
            "http",
            "http://h/v2/models/m/infer",
            timeout_seconds=5,
            options=options,
            context=BuildContext(REPO),
        )


@pytest.mark.parametrize(
    "target",
    [
        "http://h/predict",
        "http://h/v2/models/m",
        "http://h/v2/models/m/infer/extra",
        "http://h/v1/models/m:predict",
    ],
)
def test_a_v2_target_must_be_an_infer_url(target):
    with pytest.raises(BackendConfigError, match="infer URL"):
        HttpBackend(target, timeout_seconds=1, protocol="v2")


def test_a_gateway_path_prefix_is_allowed_and_kept_for_the_metadata_route():
    backend = HttpBackend("https://gw/serving/ns/v2/models/m/infer?key=1", timeout_seconds=1, protocol="v2")
    assert backend.model_url == "https://gw/serving/ns/v2/models/m?key=1"


def test_importing_the_backend_does_not_import_numpy():
    code = "import sys, caching.backends.http; print('numpy' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
