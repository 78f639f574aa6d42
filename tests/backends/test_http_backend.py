"""The ``http`` backend against the real model server process."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from caching.backends.base import (
    BackendConfigError,
    BackendError,
    BackendRejectedInput,
    BackendTimeout,
    BackendUnavailable,
)
from caching.backends.http import HttpBackend
from tests.backends.contract import BackendContract
from tests.support.processes import free_port


class TestHttpBackendContract(BackendContract):
    @pytest.fixture
    def backend(self, backend_server):
        return HttpBackend(backend_server.predict_url, timeout_seconds=5)

    @pytest.fixture
    def instances(self):
        return [[1, 2], {"a": "b"}, "text", None, 3.5]

    @pytest.fixture
    def rejected_instances(self, backend_server):
        backend_server.control(status=400, message="instance 0: wrong shape")
        return [[1]]


@pytest.fixture
def backend_server(model_server_url):
    from tests.conftest import ModelServer

    server = ModelServer(model_server_url)
    server.reset()
    return server


def test_parameters_are_forwarded(backend_server):
    result = HttpBackend(backend_server.predict_url, timeout_seconds=5).predict([1], {"top_k": 2})
    assert result.predictions == [{"echo": 1, "parameters": {"top_k": 2}}]
    assert backend_server.calls() == [{"instances": [1], "parameters": {"top_k": 2}}]


def test_connections_are_reused(backend_server):
    backend = HttpBackend(backend_server.predict_url, timeout_seconds=5)
    for value in range(3):
        backend.predict([value], None)
    ports = backend_server.peer_ports()
    assert len(ports) == 3
    assert len(set(ports)) == 1


def test_version_fields_are_reported(backend_server):
    backend_server.control(modelVersionId="3", deployedModelId="42")
    result = HttpBackend(backend_server.predict_url, timeout_seconds=5).predict([1], None)
    assert (result.model_version_id, result.deployed_model_id) == ("3", "42")


@pytest.mark.parametrize(
    "status,error",
    [
        (400, BackendRejectedInput),
        (422, BackendRejectedInput),
        (429, BackendUnavailable),
        (500, BackendError),
        (503, BackendUnavailable),
        (504, BackendTimeout),
        (404, BackendError),
    ],
)
def test_upstream_statuses_map_to_errors(backend_server, status, error):
    backend_server.control(status=status, message="upstream says no")
    with pytest.raises(error) as raised:
        HttpBackend(backend_server.predict_url, timeout_seconds=5).predict([1], None)
    assert type(raised.value) is error
    assert "upstream says no" in str(raised.value)


def test_slow_server_times_out(backend_server):
    backend_server.control(delay=2)
    with pytest.raises(BackendTimeout):
        HttpBackend(backend_server.predict_url, timeout_seconds=0.3).predict([1], None)


def test_refused_connection_is_unavailable():
    with pytest.raises(BackendUnavailable):
        HttpBackend(f"http://127.0.0.1:{free_port()}/predict", timeout_seconds=2).predict([1], None)


def test_wrong_prediction_count_is_a_backend_error():
    """A server that drops a prediction must not shift answers onto the wrong instances."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def answer_once():
        connection, _ = listener.accept()
        connection.recv(65536)
        body = b'{"predictions": [1]}'
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        connection.close()

    thread = threading.Thread(target=answer_once)
    thread.start()
    try:
        with pytest.raises(BackendError, match="1 predictions for 2 instances"):
            HttpBackend(f"http://127.0.0.1:{port}/predict", timeout_seconds=5).predict([1, 2], None)
    finally:
        thread.join(5)
        listener.close()


@pytest.mark.parametrize("target", ["ftp://x/predict", "not a url", "file:///etc/passwd", "http://"])
def test_bad_targets_are_refused(target):
    with pytest.raises(BackendConfigError):
        HttpBackend(target, timeout_seconds=1)


@pytest.fixture(scope="module")
def uvicorn_url():
    from tests.support.processes import server_process

    with server_process("tests.support.asgi_model_server") as url:
        yield url


def test_a_connection_uvicorn_closed_after_a_500_is_resent_not_failed(uvicorn_url):
    """Right after a 500, uvicorn closes the connection; the next request sent on it gets a reset."""
    backend = HttpBackend(f"{uvicorn_url}/predict", timeout_seconds=5)
    for number in range(200):
        with pytest.raises(BackendError, match="HTTP 500"):
            backend.predict([["not a number"]], None)
        assert backend.predict([[number, 1]], None).predictions == [number + 1.0]


class ScriptedServer:
    """A raw HTTP/1.1 server: the first request on each connection gets a kept-alive 200, later ones
    what the test scripts (a reset at once, half an answer, a close after working on it)."""

    def __init__(self, later: str, *, first: str = "answer") -> None:
        self.later, self.first = later, first
        self.requests = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/predict"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(connection,), daemon=True).start()

    def _connection(self, connection: socket.socket) -> None:
        with connection, connection.makefile("rb") as reader:
            for number in range(2):
                if not self._read_request(reader):
                    return
                self.requests += 1
                behaviour = self.first if number == 0 else self.later
                body = b'{"predictions": [1]}'
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                if behaviour == "answer":
                    connection.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
                elif behaviour == "half an answer":
                    connection.sendall(head + b"Content-Length: 100\r\n\r\n" + body[:5])
                    return
                elif behaviour == "close after working":
                    threading.Event().wait(0.5)  # the model works on it, then its worker dies
                    return
                else:  # "close": the connection was already dead for this request
                    return

    @staticmethod
    def _read_request(reader: Any) -> bool:
        length = 0
        while line := reader.readline():
            if line in (b"\r\n", b"\n"):
                reader.read(length)
                return True
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return False

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize(
    "later,sent",
    [
        ("close", 3),  # found dead at once: sent again on a new connection, which answers
        ("half an answer", 2),  # the server had started answering: never sent twice
        ("close after working", 2),  # the server worked on it: never sent twice
    ],
)
def test_only_a_pooled_connection_found_dead_at_once_is_resent(later, sent):
    server = ScriptedServer(later)
    try:
        backend = HttpBackend(server.url, timeout_seconds=1)  # "at once": within a quarter of it
        assert backend.predict([1], None).predictions == [1]
        if sent == 3:
            assert backend.predict([1], None).predictions == [1]
        else:
            with pytest.raises(BackendError):
                backend.predict([1], None)
        assert server.requests == sent
    finally:
        server.close()


def test_a_new_connection_closed_before_an_answer_is_not_resent():
    """Only a reused connection may have died unseen; a new one's failure is the server's."""
    server = ScriptedServer("close", first="close")
    try:
        backend = HttpBackend(server.url, timeout_seconds=5)
        with pytest.raises(BackendUnavailable, match=r"^model server connection failed \(connection"):
            backend.predict([1], None)
        assert server.requests == 1
    finally:
        server.close()
