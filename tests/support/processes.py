"""Real helper processes for tests and benchmarks (Redis servers come from predcache_site.local_redis)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from predcache_site.local_redis import RedisServer, free_port, redis_answers, wait_until

__all__ = ["REPO", "RedisServer", "free_port", "model_server", "redis_answers", "wait_until"]

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def model_server() -> Iterator[str]:
    """Run tests/support/model_server.py; yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.model_server"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
