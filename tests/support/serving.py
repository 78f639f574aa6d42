"""How the test servers run as processes: bind a free port, print it, serve until killed."""

from __future__ import annotations

import argparse
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(handler: type[BaseHTTPRequestHandler], description: str | None, *, backlog: int = 5) -> None:
    """Serve ``handler`` on 127.0.0.1 (``--port``, default a free one); the port is the first line out.

    ``backlog`` is the listen queue: raise it for servers that take bursts of connections.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0)
    port = parser.parse_args().port
    server_class = type(
        "Server", (ThreadingHTTPServer,), {"request_queue_size": backlog, "daemon_threads": True}
    )
    server = server_class(("127.0.0.1", port), handler)
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()
