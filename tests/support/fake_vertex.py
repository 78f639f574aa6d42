"""A fake Vertex AI online-prediction server speaking the REST API, for tests.

``POST /v1/projects/P/locations/L/endpoints/E:predict`` answers each instance with
``{"sum": <sum of its numbers>, "n": <how many>}`` when it is a list of numbers, or
echoes it back otherwise, and reports ``deployedModelId``/``modelVersionId`` like
Vertex does. ``GET /v1/projects/P/locations/L/endpoints/E`` returns the Endpoint
resource. ``GET /calls`` lists the predict bodies (with the path and the size of each
body); ``POST /control`` sets the behaviour:

- ``{"modelVersionId": "2", "deployedModelId": "dm-2"}``: report another version;
- ``{"fail": [429, 503], "message": "..."}``: answer the next predict calls with these
  statuses, one each, then succeed again;
- ``{"rpcStatus": "FAILED_PRECONDITION"}``: the status name those failures carry;
- ``{"delay": 2.0}``: wait before answering every predict call;
- ``{"nan": true}``: answer with NaN predictions, which JSON cannot carry.

``POST /reset`` restores the defaults. Run: ``python -m tests.support.fake_vertex``;
it prints its port on the first line.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.serving import serve

_PREDICT = re.compile(r"^/v1/(projects/[^/]+/locations/[^/]+/endpoints/[^/:]+):predict$")
_ENDPOINT = re.compile(r"^/v1/(projects/[^/]+/locations/[^/]+/endpoints/[^/:]+)$")
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_DEFAULTS = {"modelVersionId": "1", "deployedModelId": "1111"}

_lock = threading.Lock()
_calls: list[dict[str, Any]] = []
_control: dict[str, Any] = dict(_DEFAULTS)


def _prediction(instance: Any) -> Any:
    if isinstance(instance, list) and all(type(x) in (int, float) for x in instance):
        return {"sum": float(sum(instance)), "n": len(instance)}
    return {"echo": instance}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 64 * 1024  # one write per response, and TCP_NODELAY: see tests/support/model_server.py
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, document: Any) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, name: str | None = None) -> None:
        name = name or _STATUS_NAMES.get(status, "UNKNOWN")
        self._send(status, {"error": {"code": status, "message": message, "status": name}})

    def _read(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/calls":
            with _lock:
                self._send(200, {"calls": list(_calls)})
            return
        match = _ENDPOINT.match(path)
        if match:
            with _lock:
                control = dict(_control)
            name = match.group(1)
            project_location = name.rsplit("/endpoints/", 1)[0]
            self._send(
                200,
                {
                    "name": name,
                    "displayName": "fake-endpoint",
                    "deployedModels": [
                        {
                            "id": control["deployedModelId"],
                            "model": f"{project_location}/models/42",
                            "modelVersionId": control["modelVersionId"],
                            "displayName": "fake-model",
                        }
                    ],
                    "trafficSplit": {control["deployedModelId"]: 100},
                },
            )
            return
        self._error(404, f"no route {path}")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self._read()
        if path == "/reset":
            with _lock:
                _calls.clear()
                _control.clear()
                _control.update(_DEFAULTS)
            self._send(200, {"reset": True})
            return
        if path == "/control":
            with _lock:
                _control.update(json.loads(body))
            self._send(200, {"ok": True})
            return
        match = _PREDICT.match(path)
        if not match:
            self._error(404, f"no route {path}")
            return
        document = json.loads(body or b"{}")
        with _lock:
            _calls.append({"endpoint": match.group(1), "bytes": len(body), "body": document})
            control = dict(_control)
            failures = _control.get("fail") or []
            failure = failures[0] if failures else None
            if failures:
                _control["fail"] = failures[1:]
        if control.get("delay"):
            time.sleep(control["delay"])
        if failure:
            self._error(failure, control.get("message", f"simulated {failure}"), control.get("rpcStatus"))
            return
        instances = document.get("instances")
        if not isinstance(instances, list) or not instances:
            self._error(400, "instances must be a non-empty list")
            return
        project_location = match.group(1).rsplit("/endpoints/", 1)[0]
        self._send(
            200,
            {
                "predictions": [
                    {"sum": float("nan")} if control.get("nan") else _prediction(instance)
                    for instance in instances
                ],
                "deployedModelId": control["deployedModelId"],
                "model": f"{project_location}/models/42",
                "modelDisplayName": "fake-model",
                "modelVersionId": control["modelVersionId"],
            },
        )


def main() -> None:
    serve(Handler, __doc__)


if __name__ == "__main__":
    main()
