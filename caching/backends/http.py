"""``http`` backend: POST JSON to a prediction server, in the row format or the Open Inference Protocol.

This module is the transport (connection pool, requests, HTTP status to backend error) and the row
format; what a v2 request holds and what a v2 answer means is :mod:`caching.backends.open_inference`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, TimeoutError

from caching.backends import open_inference
from caching.backends.base import (
    BackendConfigError,
    BackendError,
    BackendRejectedInput,
    BackendResult,
    BackendTimeout,
    BackendUnavailable,
    checked_result,
)

# One pool manager per process: keep-alive connections are reused across requests and models.
_POOL = urllib3.PoolManager(num_pools=64, maxsize=16, block=False, retries=False)
_MAX_MESSAGE = 500
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
        pool: urllib3.PoolManager = _POOL,
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
        self.timeout = urllib3.Timeout(total=timeout_seconds)
        self.pool = pool
        self.clock = clock

    def verify(self) -> None:
        """Nothing to check beyond the URL: the server may legitimately be down right now."""

    def predict(self, instances: Sequence[Any], parameters: dict[str, Any] | None) -> BackendResult:
        """POST the instances in this backend's protocol; one call (v2: one per shape group)."""
        if self.protocol == "v2":
            return checked_result(self._predict_v2(instances, parameters), len(instances))
        data = self._post(_row_request(instances, parameters))
        return checked_result(_row_result(data), len(instances))

    def _predict_v2(self, instances: Sequence[Any], parameters: dict[str, Any] | None) -> BackendResult:
        if not instances:
            raise BackendRejectedInput("the v2 protocol needs at least one instance")
        declared = open_inference.declared_inputs(self.model_url, fetch=self._get_metadata, clock=self.clock)
        batches = open_inference.request_batches(instances, declared)
        results = []
        for batch in batches:
            try:
                data = self._post(batch.body(parameters))
            except BackendRejectedInput:
                open_inference.refresh_metadata_after_rejection(self.model_url, now=self.clock())
                raise
            results.append(open_inference.batch_result(_answer_document(data), len(batch.positions)))
        return open_inference.merged_result(batches, results, len(instances))

    def _post(self, body: bytes) -> bytes:
        try:
            response = self.pool.request(
                "POST", self.url, body=body, headers=_HEADERS, timeout=self.timeout, retries=False
            )
        except NewConnectionError as exc:  # a subclass of TimeoutError in urllib3 2: test it first
            raise BackendUnavailable(f"model server unreachable: {exc}") from exc
        except TimeoutError as exc:
            raise BackendTimeout(f"model server did not answer in {self.timeout.total}s") from exc
        except HTTPError as exc:
            raise BackendUnavailable(f"model server connection failed: {exc}") from exc
        if response.status != 200:
            raise _error_for_status(response.status, _upstream_message(response.data))
        return response.data

    def _get_metadata(self) -> tuple[int, bytes]:
        """GET the v2 metadata route: (HTTP status, body)."""
        try:
            response = self.pool.request(
                "GET", self.model_url, headers=_HEADERS, timeout=self.timeout, retries=False
            )
        except HTTPError as exc:
            raise open_inference.MetadataUnreachable(str(exc)) from exc
        return response.status, response.data


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


def _upstream_message(data: bytes) -> str:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data[:_MAX_MESSAGE].decode("utf-8", "replace")
    # Row servers answer {"error": {"message": ...}}; v2 servers answer {"error": "..."}.
    error = document.get("error", document) if isinstance(document, dict) else document
    if isinstance(error, dict):
        error = error.get("message", error)
    return str(error)[:_MAX_MESSAGE]


def _error_for_status(status: int, message: str) -> BackendError:
    detail = f"model server answered HTTP {status}: {message}"
    if status in (400, 422):
        return BackendRejectedInput(detail)
    if status in (429, 502, 503):
        return BackendUnavailable(detail)
    if status == 504:
        return BackendTimeout(detail)
    return BackendError(detail)
