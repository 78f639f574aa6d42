"""A fake Vertex AI PredictionService over plain (insecure) gRPC, for tests of the default transport.

It answers ``Predict`` like tests/support/fake_vertex.py answers REST, from the same rules,
and keeps the calls it received: ``python -m tests.support.fake_vertex_grpc`` prints the
gRPC port and then an HTTP port on which ``GET /calls`` lists them, ``POST /control`` sets
``{"modelVersionId", "deployedModelId", "fail": [grpc status codes as numbers]}`` and
``POST /reset`` restores the defaults.
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.cloud.aiplatform_v1.types import PredictRequest, PredictResponse
from google.protobuf import json_format, struct_pb2

from tests.support.fake_vertex import _prediction

_DEFAULTS = {"modelVersionId": "1", "deployedModelId": "1111"}
_lock = threading.Lock()
_calls: list[dict[str, Any]] = []
_control: dict[str, Any] = dict(_DEFAULTS)


def _predict(request: PredictRequest, context: grpc.ServicerContext) -> PredictResponse:
    document = json_format.MessageToDict(PredictRequest.pb(request))
    with _lock:
        _calls.append(
            {"endpoint": request.endpoint, "bytes": PredictRequest.pb(request).ByteSize(), "body": document}
        )
        control = dict(_control)
        failures = _control.get("fail") or []
        if failures:
            _control["fail"] = failures[1:]
    if failures:
        context.abort(
            grpc.StatusCode(tuple(_code_by_value()[failures[0]])), control.get("message", "simulated")
        )
    response = PredictResponse.pb()(
        deployed_model_id=control["deployedModelId"], model_version_id=control["modelVersionId"]
    )
    for instance in document.get("instances", []):
        response.predictions.append(json_format.ParseDict(_prediction(instance), struct_pb2.Value()))
    return PredictResponse.wrap(response)


def _code_by_value() -> dict[int, Any]:
    return {code.value[0]: code.value for code in grpc.StatusCode}


class _Control(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, document: Any) -> None:
        body = json.dumps(document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        with _lock:
            self._send({"calls": list(_calls)})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with _lock:
            if self.path == "/reset":
                _calls.clear()
                _control.clear()
                _control.update(_DEFAULTS)
            else:
                _control.update(json.loads(body))
        self._send({"ok": True})


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(
        _predict,
        request_deserializer=PredictRequest.deserialize,
        response_serializer=PredictResponse.serialize,
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "google.cloud.aiplatform.v1.PredictionService", {"Predict": handler}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    control = ThreadingHTTPServer(("127.0.0.1", 0), _Control)
    control.daemon_threads = True
    print(port, flush=True)
    print(control.server_address[1], flush=True)
    sys.stdout.close()
    control.serve_forever()


if __name__ == "__main__":
    main()
