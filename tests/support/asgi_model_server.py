"""A model server on uvicorn (the ASGI server most Python model servers run on), for tests.

The model sums each instance's numbers and declares no input schema, so an instance it cannot
sum (a string where a number goes) makes it raise, and uvicorn answers 500 and closes the
connection, without ``Connection: close``, as MLServer and KServe's Python servers do.
Run: ``python -m tests.support.asgi_model_server``; it prints its port on the first line.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any

import uvicorn


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``POST /predict`` in the row format: each prediction is the sum of the instance's numbers."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    document = json.loads(body)
    try:
        predictions = [sum(float(value) for value in instance) for instance in document["instances"]]
    except (TypeError, ValueError) as exc:
        # What Starlette's ServerErrorMiddleware does (FastAPI, so MLServer and KServe): answer
        # 500, then re-raise for the server to log; uvicorn then closes the connection.
        await _answer(send, 500, {"error": f"{type(exc).__name__}: {exc}"})
        raise
    await _answer(send, 200, {"predictions": predictions})


async def _answer(send: Any, status: int, document: Any) -> None:
    answer = json.dumps(document).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def main() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    print(listener.getsockname()[1], flush=True)
    sys.stdout.close()
    config = uvicorn.Config(app, fd=listener.fileno(), log_config=None, access_log=False)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
