"""``http`` backend: POST JSON to a prediction server, in the row format or the Open Inference Protocol.

This module is the transport (connection pool, requests, HTTP status to backend error) and the row
format; what a v2 request holds and what a v2 answer means is :mod:`caching.backends.open_inference`.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import urllib3
import urllib3.connection
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError, TimeoutError

from caching.backends import open_inference
from caching.backends.base import (
    BackendConfigError,
    BackendError,
    BackendRejectedInput,
    BackendResult,
    BackendTimeout,
    BackendUnavailable,
    checked_result,
    client_reason,
    connection_failure,
)

logger = logging.getLogger(__name__)

# Whether this thread's request in flight opened a new connection (else it reused a pooled one).
_attempt = threading.local()


class _TrackedHTTPConnection(urllib3.connection.HTTPConnection):
    def connect(self) -> None:
        _attempt.connected = True
        super().connect()


class _TrackedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def connect(self) -> None:
        _attempt.connected = True
        super().connect()


class _TrackedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


def connection_pools(**settings: Any) -> urllib3.PoolManager:
    """A urllib3 pool manager whose connections tell a request whether it had to connect."""
    manager = urllib3.PoolManager(**settings)
    manager.pool_classes_by_scheme = {"http": _TrackedHTTPPool, "https": _TrackedHTTPSPool}
    return manager


def shared_connection_pools() -> urllib3.PoolManager:
    """The pools one process shares across models: keep-alive connections are reused between requests."""
    return connection_pools(num_pools=64, maxsize=16, block=False, retries=False)


_MAX_MESSAGE = 2000  # of an error body read for its reason
_LOGGED_BODY = 4000
_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}

PROTOCOLS = ("row", "v2")


class HttpBackend:
    """Calls a JSON prediction server.

    ``protocol="row"``: Vertex AI / TF Serving / KServe v1 (``{"instances"}`` -> ``{"predictions"}``).
    ``protocol="v2"``: Open Inference Protocol (Triton, KServe v2, MLServer); each instance is an
    object mapping input names to one row, batched into one tensor per input, typed as the
    model's metadata declares.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float,
        protocol: str = "row",
        pool: urllib3.PoolManager | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BackendConfigError(f"http backend target must be an http(s) URL, got {url!r}")
        if protocol not in PROTOCOLS:
            raise BackendConfigError(f"unknown http protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
        if protocol == "v2" and not open_inference.is_infer_path(parts.path):
            raise BackendConfigError(
                f"a v2 target is the model's infer URL (http://HOST/v2/models/NAME[/versions/V]/infer), "
                f"got {url!r}"
            )
        self.url = url
        # The v2 metadata route is the infer URL without "/infer".
        self.model_url = urlunsplit(parts._replace(path=parts.path.removesuffix("/infer")))
        self.protocol = protocol
        self.identity = ""  # the URL and the options (part of the model's settings) say it all
        self.timeout_seconds = timeout_seconds
        self.timeout = urllib3.Timeout(total=timeout_seconds)
        self.pool = pool if pool is not None else shared_connection_pools()
        self.metadata = open_inference.MetadataMemory()  # v2: the inputs the server declared
        self.clock = clock

    def verify(self) -> None:
        """Nothing to check beyond the URL: the server may legitimately be down right now."""

    def outdated(self) -> bool:
        """Never: everything that decides its answers is in the model's settings."""
        return False

    def check(self, instances: Sequence[Any], parameters: dict[str, Any] | None) -> None:
        """v2: the instances against the inputs the server declared, if this process knows them yet."""
        if self.protocol == "v2" and instances:
            known, declared = self.metadata.known_inputs()
            if known:
                open_inference.request_batches(instances, declared)

    def predict(self, instances: Sequence[Any], parameters: dict[str, Any] | None) -> BackendResult:
        """POST the instances in this backend's protocol; one call (v2: one per shape group)."""
        if self.protocol == "v2":
            return checked_result(self._predict_v2(instances, parameters), len(instances))
        data = self._post(_row_request(instances, parameters))
        return checked_result(_row_result(data), len(instances))

    def _predict_v2(self, instances: Sequence[Any], parameters: dict[str, Any] | None) -> BackendResult:
        if not instances:
            raise BackendRejectedInput("the v2 protocol needs at least one instance")
        declared = self.metadata.declared_inputs(self.model_url, fetch=self._get_metadata, clock=self.clock)
        batches = open_inference.request_batches(instances, declared)
        results = []
        for batch in batches:
            try:
                data = self._post(batch.body(parameters))
            except BackendRejectedInput as exc:
                self.metadata.refresh_after_rejection(self.clock())
                # The server numbers instances within this batch, not within ours.
                raise BackendRejectedInput(str(exc), sent=batch.positions) from exc
            results.append(open_inference.batch_result(_answer_document(data), len(batch.positions)))
        return open_inference.merged_result(batches, results, len(instances))

    def _post(self, body: bytes) -> bytes:
        response = self._send("POST", self.url, body)
        if response.status != 200:
            raise _error_for_status(self.url, response.status, response.data)
        return response.data

    def _send(self, method: str, url: str, body: bytes | None = None) -> urllib3.BaseHTTPResponse:
        """One request on a pooled connection, resent once on a new one if the pooled one was dead.

        A model server may close a kept-alive connection after answering (uvicorn does after a
        500, without ``Connection: close``); the next request sent on it fails at once, before
        any byte of an answer. A predict is safe to send again then, and only a new
        connection's failure is the model server's.
        """
        deadline = self.clock() + self.timeout_seconds
        try:
            return self._request(self.pool, method, url, body, self.timeout)
        except _DeadPooledConnection as exc:
            logger.info("%s: pooled connection to %s was closed (%s); sending again", method, url, exc)
        remaining = urllib3.Timeout(total=max(deadline - self.clock(), 0.05))
        settings = {**self.pool.connection_pool_kw, "maxsize": 1}
        with connection_pools(num_pools=1, **settings) as fresh:
            return self._request(fresh, method, url, body, remaining)

    def _request(
        self,
        pool: urllib3.PoolManager,
        method: str,
        url: str,
        body: bytes | None,
        timeout: urllib3.Timeout,
    ) -> urllib3.BaseHTTPResponse:
        _attempt.connected = False
        started = self.clock()
        try:
            return pool.request(method, url, body=body, headers=_HEADERS, timeout=timeout, retries=False)
        except NewConnectionError as exc:  # a subclass of TimeoutError in urllib3 2: test it first
            logger.warning("model server %s unreachable: %s", url, exc)
            raise BackendUnavailable(f"model server unreachable ({connection_failure(exc)})") from exc
        except TimeoutError as exc:
            raise BackendTimeout(f"model server did not answer in {self.timeout_seconds}s") from exc
        except ProtocolError as exc:
            logger.warning("connection to model server %s failed: %s", url, exc)
            message = f"model server connection failed ({connection_failure(exc)})"
            if self._was_dead_when_sent(exc, elapsed=self.clock() - started):
                raise _DeadPooledConnection(message) from exc
            raise BackendUnavailable(message) from exc
        except HTTPError as exc:
            logger.warning("connection to model server %s failed: %s", url, exc)
            raise BackendUnavailable(f"model server connection failed ({connection_failure(exc)})") from exc

    def _was_dead_when_sent(self, exc: ProtocolError, *, elapsed: float) -> bool:
        """Whether a failure shows a pooled connection the server had closed before the request.

        All of: the connection was reused, not opened for this request; it failed before the
        status line ("Connection aborted"; a broken body is "Connection broken") by being
        closed or reset; and at once, not after the server worked on the request a while.
        """
        cause = exc.args[1] if len(exc.args) > 1 else exc.__cause__
        return (
            not getattr(_attempt, "connected", True)
            and str(exc.args[0] if exc.args else "").startswith("Connection aborted")
            and isinstance(cause, _CLOSED_BEFORE_ANSWER)
            and elapsed < min(1.0, self.timeout_seconds / 4)
        )

    def _get_metadata(self) -> tuple[int, bytes]:
        """GET the v2 metadata route: (HTTP status, body)."""
        try:
            response = self._send("GET", self.model_url)
        except BackendError as exc:
            raise open_inference.MetadataUnreachable(str(exc)) from exc
        return response.status, response.data


class _DeadPooledConnection(BackendUnavailable):
    """A reused connection was found closed when the request was sent: it may be sent again."""


# What a dead pooled connection raises, inside urllib3's ProtocolError, when a request is sent on it.
_CLOSED_BEFORE_ANSWER = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


# --- row format ---------------------------------------------------------------------------------


def _row_request(instances: Sequence[Any], parameters: dict[str, Any] | None) -> bytes:
    body: dict[str, Any] = {"instances": list(instances)}
    if parameters is not None:
        body["parameters"] = parameters
    return orjson.dumps(body)


def _row_result(data: bytes) -> BackendResult:
    document = _answer_document(data)
    if not isinstance(document, dict) or not isinstance(document.get("predictions"), list):
        raise BackendError("model server answer has no 'predictions' list")
    return BackendResult(
        predictions=document["predictions"],
        model_version_id=_optional_str(document.get("modelVersionId")),
        deployed_model_id=_optional_str(document.get("deployedModelId")),
    )


# --- answers and errors -------------------------------------------------------------------------


def _answer_document(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BackendError("model server answered with invalid JSON") from exc


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _upstream_reason(data: bytes) -> str | None:
    """The model server's own one-line reason in an error body, if it gives a clean one."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return client_reason(data[:_MAX_MESSAGE].decode("utf-8", "replace"))
    # Row servers answer {"error": {"message": ...}}; v2 servers {"error": "..."}; FastAPI {"detail": ...}.
    error = (
        document.get("error", document.get("detail", document)) if isinstance(document, dict) else document
    )
    if isinstance(error, dict):
        error = error.get("message", error)
    return client_reason(error if isinstance(error, str) else None)


def _error_for_status(url: str, status: int, data: bytes) -> BackendError:
    """The error a client is told for a model server's non-200 answer; the whole body goes to the log."""
    logger.warning("model server %s answered HTTP %d: %s", url, status, data[:_LOGGED_BODY])
    reason = _upstream_reason(data)
    detail = f"model server answered HTTP {status}" + (f": {reason}" if reason else "")
    if status in (400, 422):
        return BackendRejectedInput(detail)
    if status in (429, 502, 503):
        return BackendUnavailable(detail)
    if status == 504:
        return BackendTimeout(detail)
    return BackendError(detail)
