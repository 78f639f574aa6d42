"""The test model server (tests/support/model_server.py) with room for bursts of concurrent calls.

socketserver listens with a backlog of 5: when tens of predict calls connect at once, the
connections past it are reset and the cache answers 503. Same routes and behaviour otherwise.
Run: ``python -m tests.support.burst_model_server``; it prints its port on the first line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path

from tests.support.model_server import Handler

REPO = Path(__file__).resolve().parents[2]


class BurstServer(ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True


@contextmanager
def burst_model_server() -> Iterator[str]:
    """Run this server in a process of its own; yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.burst_model_server"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert process.stdout is not None
        yield f"http://127.0.0.1:{int(process.stdout.readline())}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    server = BurstServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
