"""Real helper processes for tests and benchmarks (Redis servers come from predcache_site.local_redis)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from predcache_site.local_redis import RedisServer, free_port, redis_answers, wait_until

__all__ = [
    "REPO",
    "RedisServer",
    "fake_vertex_grpc_server",
    "fake_vertex_server",
    "free_port",
    "kserve_server",
    "model_server",
    "redis_answers",
    "wait_until",
]

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def model_server() -> Iterator[str]:
    """Run tests/support/model_server.py; yields its base URL."""
    with server_process("tests.support.model_server") as url:
        yield url


@contextmanager
def kserve_server() -> Iterator[str]:
    """Run tests/support/kserve_server.py (Open Inference Protocol v2); yields its base URL."""
    with server_process("tests.support.kserve_server") as url:
        yield url


@contextmanager
def fake_vertex_server() -> Iterator[str]:
    """Run tests/support/fake_vertex.py (Vertex AI's REST API); yields its base URL."""
    with server_process("tests.support.fake_vertex") as url:
        yield url


@contextmanager
def fake_vertex_grpc_server() -> Iterator[tuple[str, str]]:
    """Run tests/support/fake_vertex_grpc.py; yields its gRPC address and its control URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_vertex_grpc"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert process.stdout is not None
        grpc_port, control_port = int(process.stdout.readline()), int(process.stdout.readline())
        yield f"http://127.0.0.1:{grpc_port}", f"http://127.0.0.1:{control_port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def server_process(module: str) -> Iterator[str]:
    """Run a server module that prints its port on its first line; yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", module],
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
