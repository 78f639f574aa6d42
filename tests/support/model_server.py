"""A real HTTP model server for tests and benchmarks, speaking the row format.

Each instance's prediction is ``{"echo": instance, "parameters": parameters}``,
except an object instance with a ``"return"`` field, whose prediction is that
field's value (so tests can ask for ``0``, ``null``, ``false``, ``""`` or ``[]``), and an object
instance with a ``"calls"`` field, whose prediction is the number of predict calls the server had
received when it computed it (so each computation of it answers differently).
Like real servers with no input schema, the server fails on some instances:
``{"reject": "why"}`` gets a 400 ``instance <i>: why`` (``i`` counting within the
batch it received, as TF Serving does), and ``{"crash": "why"}`` a 500 whose body is
a Python traceback; after each 500 the server drops the connection (as uvicorn
closes it, without ``Connection: close``): the next request sent on it gets no answer.
``GET /calls`` lists the bodies received, when each arrived (``times``, Unix seconds) and how
many requests met a dropped connection; ``POST /control`` sets the behaviour
(``{"status": 503, "delay": 1.5, "modelVersionId": "v2", "hold": true}``);
with ``hold``, each predict call is recorded and then waits until ``POST /release``.
``POST /reset`` clears all of it and releases held calls; ``POST /reset-calls`` only the calls.
Run: ``python -m tests.support.model_server [--port N]``; it prints its port on the first line.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from tests.support.serving import serve

_state_lock = threading.Lock()
_calls: list[Any] = []
_call_times: list[float] = []  # time.time() as each predict call arrived: what a rate is measured by
_peer_ports: list[int] = []  # client port of each predict call: shows connection reuse
_dropped = [0]  # requests that arrived on a connection the server had given up
_control: dict[str, Any] = {}
_released = threading.Event()


def _predict(instance: Any, parameters: Any, calls: int) -> Any:
    if isinstance(instance, dict) and "return" in instance:
        return instance["return"]
    if isinstance(instance, dict) and "calls" in instance:
        return calls
    return {"echo": instance, "parameters": parameters}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Buffer each response into one write: headers and body sent apart meet delayed ACKs on
    # keep-alive connections and cost ~40 ms per request. TCP_NODELAY too, for what one write of
    # 64 KiB does not hold (a large response's tail would otherwise wait for the client's ACK).
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, document: Any) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def do_GET(self) -> None:
        if self.path == "/calls":
            with _state_lock:
                self._send(
                    200,
                    {
                        "calls": list(_calls),
                        "times": list(_call_times),
                        "peer_ports": list(_peer_ports),
                        "dropped": _dropped[0],
                    },
                )
        elif self.path == "/healthz":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "no such route"})

    def do_POST(self) -> None:
        if getattr(self, "drop_next", False):
            # Closed after a 500: this request gets no answer at all.
            with _state_lock:
                _dropped[0] += 1
            self.close_connection = True
            return
        path = urlsplit(self.path).path
        if path == "/reset":
            with _state_lock:
                _calls.clear()
                _call_times.clear()
                _peer_ports.clear()
                _control.clear()
                _dropped[0] = 0
            _released.set()
            self._body()
            self._send(200, {"reset": True})
        elif path == "/reset-calls":
            with _state_lock:
                _calls.clear()
                _call_times.clear()
                _peer_ports.clear()
            self._body()
            self._send(200, {"reset": True})
        elif path == "/control":
            settings = self._body()
            with _state_lock:
                _control.clear()
                _control.update(settings)
                if settings.get("hold"):
                    _released.clear()
            self._send(200, {"control": settings})
        elif path == "/release":
            self._body()
            _released.set()
            self._send(200, {"released": True})
        elif path == "/predict":
            self._predict()
        else:
            self._send(404, {"error": "no such route"})

    def _predict(self) -> None:
        document = self._body()
        with _state_lock:
            _calls.append(document)
            calls = len(_calls)
            _call_times.append(time.time())
            _peer_ports.append(self.client_address[1])
            control = dict(_control)
        if control.get("hold"):
            _released.wait(timeout=60)
        if control.get("delay"):
            time.sleep(control["delay"])
        if control.get("status"):
            self._send(control["status"], {"error": {"message": control.get("message", "failure")}})
            return
        instances = document["instances"]
        for index, instance in enumerate(instances):
            if isinstance(instance, dict) and "reject" in instance:
                self._send(400, {"error": {"message": f"instance {index}: {instance['reject']}"}})
                return
        for instance in instances:
            if isinstance(instance, dict) and "crash" in instance:
                self._crash(str(instance["crash"]))
                return
        parameters = document.get("parameters")
        answer: dict[str, Any] = {
            "predictions": [_predict(instance, parameters, calls) for instance in document["instances"]]
        }
        for field in ("modelVersionId", "deployedModelId"):
            if field in control:
                answer[field] = control[field]
        self._send(200, answer)

    def _crash(self, reason: str) -> None:
        body = (
            "Traceback (most recent call last):\n"
            '  File "/srv/model/.venv/lib/python3.11/site-packages/server/predict.py", line 42, in predict\n'
            "    return model.predict(numpy.asarray(instances))\n"
            f"ValueError: {reason}\n"
        ).encode()
        self.send_response(500)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.drop_next = True


def main() -> None:
    serve(Handler, __doc__)


if __name__ == "__main__":
    main()
