"""``make demo`` as a newcomer runs it: scripts/demo.py in its own process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest

from tests.support.processes import REPO, free_port


@pytest.fixture
def foreign_server() -> Iterator[int]:
    """Another program's HTTP server holding a port (it would answer /readyz with 200, too)."""

    class Answers200(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answers200)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def demo(port: int | str, **environment: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "scripts/demo.py"],
        cwd=REPO,
        env={**os.environ, "PORT": str(port), **environment},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_port_held_by_another_server_fails_fast_naming_it(foreign_server):
    started = time.monotonic()
    process = demo(foreign_server)
    output, _ = process.communicate(timeout=20)
    assert process.returncode != 0
    assert time.monotonic() - started < 5
    assert f"port {foreign_server} is in use; rerun with PORT=" in output
    assert "predcache is running" not in output and "Traceback" not in output


def test_a_port_that_is_not_a_number_is_refused():
    process = demo("eighty")
    output, _ = process.communicate(timeout=20)
    assert process.returncode != 0 and "PORT=eighty is not a TCP port number" in output


def test_the_demo_runs_and_its_curl_line_shows_a_miss_then_a_hit(tmp_path: Path, redis_url, settings):
    port = free_port()
    process = demo(
        port,
        REDIS_URL=redis_url,
        PREDCACHE_KEY_PREFIX=settings.PREDCACHE_KEY_PREFIX,
        PREDCACHE_DEMO_DIR=str(tmp_path),  # its database, model, key and static files: not the checkout's
        DATABASE_URL=f"sqlite:///{tmp_path / 'predcache.sqlite3'}",  # a new machine's (CI sets PostgreSQL's)
        PREDCACHE_INSTALLATION_ID="",
        PREDCACHE_CELERY_KEY_PREFIX=f"{settings.PREDCACHE_KEY_PREFIX}celery:",  # deleted with the run's keys
    )
    try:
        assert process.stdout is not None
        output = []
        for line in process.stdout:  # until the demo says it is ready (or exits)
            output.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        text = "".join(output)
        assert f"predcache is running at http://127.0.0.1:{port}" in text, text
        key = re.search(r"^API key .*:\n  (\S+)$", text, re.MULTILINE)
        assert key is not None, text
        curl = re.search(r"curl -i -X POST (\S+) \\\n.*\n\s+-d '([^']+)'", text)
        assert curl is not None, text
        assert f"Authorization: Api-Key {key.group(1)}" in text

        def ask() -> str:
            request = urllib.request.Request(
                curl.group(1),
                data=curl.group(2).encode(),
                headers={"Authorization": f"Api-Key {key.group(1)}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.headers["X-Cache"]

        assert (ask(), ask()) == ("MISS", "HIT")
        assert (
            f"Celery: a worker with beat (warming, refresh-ahead, scheduled purges), its log in {tmp_path}"
            in text
        )
        assert " ready." in (tmp_path / "celery.log").read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0
    with pytest.raises(OSError):  # gunicorn stopped with the demo
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
    assert {"demo-api-key", "predcache.sqlite3", "models", "static"} <= {
        path.name for path in tmp_path.iterdir()
    }
