"""A model server that fails the way real ones do on the wire, for chaos tests.

A raw HTTP/1.1 server (no ``http.server``: it must be able to send what no library would) that
answers the row format correctly, each prediction ``{"echo": instance}``, except for a share of
the requests it answers with one of :data:`FAULTS`, drawn from a seeded random stream so a failing
run can be replayed. Connections are kept alive between good answers, as real servers keep them.
"""

from __future__ import annotations

import json
import random
import socket
import threading
from collections import Counter
from typing import Any, BinaryIO

# Each fault, and what the server sends for it.
FAULTS = {
    "reset": "closes the connection after reading the request, before any byte of an answer",
    "half": "a 200 whose body stops short of its Content-Length, then closes",
    "bad-chunk": "a chunked 200 whose second chunk is cut off, then closes",
    "status-line": "bytes that are not an HTTP status line",
    "not-json": "a 200 JSON response whose body is cut-off JSON",
    "html": "a 200 text/html page from a gateway",
    "count": "a 200 with one prediction fewer than the instances",
    "shape": "a 200 whose predictions are not a list",
}


def correct(instance: Any) -> Any:
    """The prediction this server gives ``instance`` when it does not fail."""
    return {"echo": instance}


class FaultyModelServer:
    """Serves on a loopback port; ``fault_rate`` of the predict calls get a fault (0 to turn them off)."""

    def __init__(self, *, fault_rate: float, seed: int) -> None:
        self.fault_rate = fault_rate
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.sent: Counter[str] = Counter()  # "ok" or the fault, per predict call
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/predict"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _draw(self) -> str:
        with self._lock:
            if self._random.random() < self.fault_rate:
                behaviour = self._random.choice(sorted(FAULTS))
            else:
                behaviour = "ok"
            self.sent[behaviour] += 1
            return behaviour

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection, connection.makefile("rb") as reader:
            while True:
                body = _read_request(reader)
                if body is None:
                    return
                if not self._answer(connection, body):
                    return

    def _answer(self, connection: socket.socket, body: bytes) -> bool:
        """Send the answer to one predict call; False when the connection is to be closed."""
        instances = json.loads(body)["instances"]
        behaviour = self._draw()
        good = json.dumps({"predictions": [correct(instance) for instance in instances]}).encode()
        if behaviour == "ok":
            connection.sendall(_head(200, "application/json", len(good)) + good)
            return True
        if behaviour == "half":
            connection.sendall(_head(200, "application/json", len(good) + 100) + good[: len(good) // 2])
        elif behaviour == "bad-chunk":
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            first, rest = good[:10], good[10:]
            cut = b"%x\r\n%s\r\n" % (len(first), first) + b"%x\r\n" % len(rest) + rest[:3]
            connection.sendall(head + cut)
        elif behaviour == "status-line":
            connection.sendall(b"\x00\xffgarbage that is not HTTP\r\n\r\n")
        elif behaviour == "not-json":
            cut = good[: len(good) - 3]
            connection.sendall(_head(200, "application/json", len(cut), close=True) + cut)
        elif behaviour == "html":
            page = b"<html><body>502 Bad Gateway</body></html>"
            connection.sendall(_head(200, "text/html", len(page), close=True) + page)
        elif behaviour == "count":
            short = json.dumps({"predictions": [correct(instance) for instance in instances[:-1]]}).encode()
            connection.sendall(_head(200, "application/json", len(short), close=True) + short)
        elif behaviour == "shape":
            odd = json.dumps({"predictions": {"0": correct(instances[0])}}).encode()
            connection.sendall(_head(200, "application/json", len(odd), close=True) + odd)
        # "reset": nothing is sent
        return False


def _head(status: int, content_type: str, length: int, *, close: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status} OK", f"Content-Type: {content_type}", f"Content-Length: {length}"]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_request(reader: BinaryIO) -> bytes | None:
    """The body of the next request on the connection, None when the client closed it."""
    length = 0
    while line := reader.readline():
        if line in (b"\r\n", b"\n"):
            return reader.read(length)
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return None
