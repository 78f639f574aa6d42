"""The test model server (tests/support/model_server.py) with room for bursts of concurrent calls.

socketserver listens with a backlog of 5: when tens of predict calls connect at once, the
connections past it are reset and the cache answers 503. Same routes and behaviour otherwise.
Run: ``python -m tests.support.burst_model_server``; it prints its port on the first line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.model_server import Handler
from tests.support.serving import serve


@contextmanager
def burst_model_server() -> Iterator[str]:
    """Run this server in a process of its own; yields its base URL."""
    from tests.support.processes import server_process

    with server_process("tests.support.burst_model_server") as url:
        yield url


def main() -> None:
    serve(Handler, __doc__, backlog=256)


if __name__ == "__main__":
    main()
