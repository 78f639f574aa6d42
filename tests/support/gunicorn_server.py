"""A gunicorn server for end-to-end tests: the project's config, the test database, chosen settings."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from django.conf import settings

from tests.support.processes import REPO, free_port, wait_until

# Each access log line: "<worker pid> status method path".
_ACCESS_LOG_FORMAT = "%(p)s %(s)s %(m)s %(U)s"
_ACCESS_LINE = re.compile(r"^<(\d+)> (\d{3}) (\S+) (\S+)$")


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    started: float  # time.monotonic() just before the request was sent
    seconds: float  # until the whole response was read
    cookies: dict[str, str]  # from every Set-Cookie header

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class GunicornServer:
    """Test-side handle on a running gunicorn."""

    port: int
    process: subprocess.Popen[bytes]
    access_log: Path
    error_log: Path

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> Response:
        """One request on a fresh connection (closed afterwards, so no worker keeps it alive)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        started = time.monotonic()
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            data = response.read()
            seconds = time.monotonic() - started
            cookies: dict[str, str] = {}
            for header in response.headers.get_all("Set-Cookie") or ():
                cookies.update({name: morsel.value for name, morsel in SimpleCookie(header).items()})
            return Response(response.status, dict(response.getheaders()), data, started, seconds, cookies)
        finally:
            connection.close()

    def predict(self, model: str, key: str, document: Any, **headers: str) -> Response:
        return self.request(
            "POST",
            f"/v1/models/{model}:predict",
            body=orjson.dumps(document),
            headers={"Content-Type": "application/json", "Authorization": f"Api-Key {key}", **headers},
        )

    def served_by(self, path_contains: str, status: int | None = None) -> list[int]:
        """The worker pid of each logged request whose path contains ``path_contains``, in log order.

        With ``status``, only the requests answered with it.
        """
        pids = []
        for line in self.access_log.read_text().splitlines():
            match = _ACCESS_LINE.match(line.strip())
            if match and path_contains in match.group(4) and status in (None, int(match.group(2))):
                pids.append(int(match.group(1)))
        return pids

    def error_tail(self, lines: int = 40) -> str:
        return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])


def database_url(settings_dict: Mapping[str, Any], vendor: str) -> str:
    """A DATABASE_URL naming the database the test process uses (so the server sees committed rows)."""
    if vendor == "sqlite":
        return f"sqlite:///{settings_dict['NAME']}"
    user = quote(settings_dict["USER"] or "")
    password = f":{quote(settings_dict['PASSWORD'])}" if settings_dict["PASSWORD"] else ""
    host, port = settings_dict["HOST"] or "127.0.0.1", settings_dict["PORT"] or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


def environment_serving_the_test_database(
    django_db_blocker: Any, redis_url: str, *, name: str
) -> dict[str, str]:
    """What a gunicorn needs to serve the test database and the tests' Redis, under a prefix of its own."""
    from django.db import connection

    from tests.conftest import SESSION_PREFIX

    with django_db_blocker.unblock():
        test_database = database_url(connection.settings_dict, connection.vendor)
    return {
        "DATABASE_URL": test_database,
        "REDIS_URL": redis_url,
        "PREDCACHE_KEY_PREFIX": f"{SESSION_PREFIX}{name}-{uuid.uuid4().hex[:8]}:",
    }


@contextmanager
def gunicorn_server(
    workdir: Path,
    *,
    environment: Mapping[str, str],
    arguments: Sequence[str] = (),
    startup_timeout: float = 30,
) -> Iterator[GunicornServer]:
    """Run ``gunicorn -c predcache_site/gunicorn_conf.py predcache_site.wsgi`` with ``environment`` added.

    Logs every request with the pid of the worker that served it; stops the server on exit.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    access_log, error_log = workdir / "access.log", workdir / "error.log"
    access_log.touch()
    env = {
        **os.environ,
        # The test process's key, so sessions and signed values it writes are valid in the server.
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "PYTHONPATH": str(REPO),
        **environment,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "predcache_site/gunicorn_conf.py",
        "--access-logfile",
        str(access_log),
        "--access-logformat",
        _ACCESS_LOG_FORMAT,
        *arguments,
        "predcache_site.wsgi",
    ]
    with error_log.open("wb") as errors:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=errors, stderr=errors)
    server = GunicornServer(port, process, access_log, error_log)

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{server.error_tail()}")
        try:
            return server.request("GET", "/healthz", timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_until(healthy, timeout=startup_timeout, what="gunicorn")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
