"""A real Open Inference Protocol (KServe v2) model server for tests, in plain Python.

Every model takes an input ``"x"`` of shape ``[B, N]`` and answers ``"sum"`` (shape ``[B]``,
FP64: the row sums) and ``"doubled"`` (shape ``[B, N]``, ``x * 2`` in the input's datatype).
A model declares its inputs in its metadata (``"x"``: FP32, shape ``[-1, -1]``) and, like Triton,
refuses with 400 a request whose inputs differ from the declaration: another datatype, another
shape, an unknown or a missing input, or values the datatype cannot hold. The model named
``undeclared`` answers its metadata route with 404 and takes ``"x"`` (and any other input) in any
numeric datatype. Errors are ``{"error": "message"}``.

``POST /v2/models/{name}[/versions/{v}]/infer``, ``GET /v2/models/{name}[/versions/{v}]``,
``GET /v2/health/ready``. ``GET /calls`` lists the infer bodies received, their paths, and the
metadata paths asked for (``{"calls", "paths", "metadata"}``). ``POST /control`` sets the
behaviour: ``{"status": 503, "message": "..."}`` to fail inference, ``{"answer": {...}}`` to
answer 200 with that document, ``{"raw": "text"}`` to answer 200 with that text;
``{"inputs": [...]}`` to declare other inputs (a redeployed model), ``{"metadata_status": 404}``
or ``{"metadata_raw": "text"}`` to break the metadata route. ``POST /reset`` clears all of it.
Run: ``python -m tests.support.kserve_server [--port N]``; it prints its port on the first line.
"""

from __future__ import annotations

import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from tests.support.serving import serve

MODEL_VERSION = "3"
UNDECLARED_MODEL = "undeclared"
DECLARED_INPUTS = [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}]
_INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
_METADATA = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?$")
_INTEGER_RANGES = {f"INT{bits}": (-(2 ** (bits - 1)), 2 ** (bits - 1)) for bits in (8, 16, 32, 64)} | {
    f"UINT{bits}": (0, 2**bits) for bits in (8, 16, 32, 64)
}
_FLOATS = ("FP16", "FP32", "FP64")

_state_lock = threading.Lock()
_calls: list[Any] = []
_paths: list[str] = []
_metadata_paths: list[str] = []
_control: dict[str, Any] = {}


class InferError(Exception):
    """A request the server refuses with HTTP 400, as Triton and KServe do."""


def _accepts(datatype: str, value: Any) -> bool:
    """Whether a JSON value can be one element of a ``datatype`` tensor (bool is not a number)."""
    if datatype in _INTEGER_RANGES:
        low, end = _INTEGER_RANGES[datatype]
        return type(value) is int and low <= value < end
    if datatype in _FLOATS:
        return type(value) in (int, float)
    return type(value) is {"BOOL": bool, "BYTES": str}.get(datatype)


def _checked_tensor(tensor: Any) -> dict[str, Any]:
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise InferError("every input needs a name")
    name, shape, datatype, data = (tensor.get(field) for field in ("name", "shape", "datatype", "data"))
    if not isinstance(shape, list) or not all(type(size) is int and size >= 0 for size in shape):
        raise InferError(f"input '{name}' has an invalid shape")
    if datatype not in (*_INTEGER_RANGES, *_FLOATS, "BOOL", "BYTES"):
        raise InferError(f"input '{name}' has unsupported datatype {datatype!r}")
    if not isinstance(data, list) or any(isinstance(value, list) for value in data):
        raise InferError(f"input '{name}' data must be a flat list")
    if len(data) != math.prod(shape):
        raise InferError(f"input '{name}' has {len(data)} values for shape {shape}")
    if not all(_accepts(datatype, value) for value in data):
        raise InferError(f"input '{name}' holds values that are not {datatype}")
    return tensor


def _check_declared(model: str, tensors: dict[str, Any], declared: list[dict[str, Any]]) -> None:
    """Refuse what Triton refuses: inputs, datatypes and shapes other than the declared ones."""
    by_name = {spec["name"]: spec for spec in declared}
    for name, tensor in tensors.items():
        spec = by_name.get(name)
        if spec is None:
            raise InferError(f"unexpected inference input '{name}' for model '{model}'")
        if tensor["datatype"] != spec["datatype"]:
            raise InferError(
                f"inference input '{name}' data-type is '{tensor['datatype']}', "
                f"but model '{model}' expects '{spec['datatype']}'"
            )
        shape, expected = tensor["shape"], spec["shape"]
        if len(shape) != len(expected) or any(
            want not in (-1, got) for want, got in zip(expected, shape, strict=True)
        ):
            raise InferError(
                f"unexpected shape for input '{name}' for model '{model}': expected {expected}, got {shape}"
            )
    if by_name.keys() - tensors.keys():
        raise InferError(f"expected {len(by_name)} inputs but got {len(tensors)} inputs for model '{model}'")


def _infer(model: str, document: Any, declared: list[dict[str, Any]] | None) -> dict[str, Any]:
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise InferError("request has no 'inputs' list")
    tensors = {tensor["name"]: tensor for tensor in map(_checked_tensor, inputs)}
    if len(tensors) != len(inputs):
        raise InferError("an input is given twice")
    if declared is not None:
        _check_declared(model, tensors, declared)
    x = tensors.get("x")
    if x is None:
        raise InferError(f"unexpected inference inputs {sorted(tensors)}: model '{model}' expects 'x'")
    if x["datatype"] not in (*_INTEGER_RANGES, *_FLOATS) or len(x["shape"]) != 2:
        raise InferError(f"input 'x' must be numeric of shape [B, N], got {x['datatype']} {x['shape']}")
    batch, width = x["shape"]
    rows = [x["data"][row * width : (row + 1) * width] for row in range(batch)]
    return {
        "model_name": model,
        "model_version": MODEL_VERSION,
        "outputs": [
            {"name": "sum", "shape": [batch], "datatype": "FP64", "data": [float(sum(row)) for row in rows]},
            {
                "name": "doubled",
                "shape": [batch, width],
                "datatype": x["datatype"],
                "data": [value * 2 for value in x["data"]],
            },
        ],
    }


def _declared_inputs(model: str, control: dict[str, Any]) -> list[dict[str, Any]] | None:
    if model == UNDECLARED_MODEL:
        return None
    return control.get("inputs", DECLARED_INPUTS)


def _metadata(model: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": model,
        "versions": [MODEL_VERSION],
        "platform": "predcache-test",
        "inputs": inputs,
        "outputs": [
            {"name": "sum", "datatype": "FP64", "shape": [-1]},
            {"name": "doubled", "datatype": "FP32", "shape": [-1, -1]},
        ],
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 64 * 1024  # one write per response, and TCP_NODELAY: see tests/support/model_server.py
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, document: Any = None, raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        metadata = _METADATA.match(path)
        if path == "/calls":
            with _state_lock:
                self._send(
                    200, {"calls": list(_calls), "paths": list(_paths), "metadata": list(_metadata_paths)}
                )
        elif path in ("/v2/health/ready", "/v2/health/live"):
            self._send(200, {"ready": True} if path.endswith("ready") else {"live": True})
        elif metadata:
            self._metadata(metadata.group(1), path)
        else:
            self._send(404, {"error": f"no route {path}"})

    def _metadata(self, model: str, path: str) -> None:
        with _state_lock:
            _metadata_paths.append(path)
            control = dict(_control)
        inputs = _declared_inputs(model, control)
        if control.get("metadata_status"):
            self._send(control["metadata_status"], {"error": "metadata unavailable"})
        elif "metadata_raw" in control:
            self._send(200, raw=control["metadata_raw"].encode())
        elif inputs is None:
            self._send(404, {"error": f"no metadata for model '{model}'"})
        else:
            self._send(200, _metadata(model, inputs))

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        infer = _INFER.match(path)
        if path == "/reset":
            self._body()
            with _state_lock:
                _calls.clear()
                _paths.clear()
                _metadata_paths.clear()
                _control.clear()
            self._send(200, {"reset": True})
        elif path == "/control":
            settings = self._body()
            with _state_lock:
                _control.clear()
                _control.update(settings)
            self._send(200, {"control": settings})
        elif infer:
            self._infer(infer.group(1), path)
        else:
            self._send(404, {"error": f"no route {path}"})

    def _infer(self, model: str, path: str) -> None:
        document = self._body()
        with _state_lock:
            _calls.append(document)
            _paths.append(path)
            control = dict(_control)
        if control.get("status"):
            self._send(control["status"], {"error": control.get("message", "failure")})
        elif "answer" in control:
            self._send(200, control["answer"])
        elif "raw" in control:
            self._send(200, raw=control["raw"].encode())
        else:
            try:
                self._send(200, _infer(model, document, _declared_inputs(model, control)))
            except InferError as exc:
                self._send(400, {"error": str(exc)})


def main() -> None:
    serve(Handler, __doc__)


if __name__ == "__main__":
    main()
