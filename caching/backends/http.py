"""``http`` backend: POST row-format JSON to a prediction server, reusing pooled connections."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, TimeoutError

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


class HttpBackend:
    """Calls a JSON prediction server that speaks the row format (Vertex AI / TF Serving / KServe v1)."""

    def __init__(self, url: str, *, timeout_seconds: float, pool: urllib3.PoolManager = _POOL) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BackendConfigError(f"http backend target must be an http(s) URL, got {url!r}")
        self.url = url
        self.identity = ""  # the URL (part of the model's settings) says it all
        self.timeout = urllib3.Timeout(total=timeout_seconds)
        self.pool = pool

    def verify(self) -> None:
        """Nothing to check beyond the URL: the server may legitimately be down right now."""

    def predict(self, instances: Sequence[Any], parameters: dict[str, Any] | None) -> BackendResult:
        body: dict[str, Any] = {"instances": list(instances)}
        if parameters is not None:
            body["parameters"] = parameters
        try:
            response = self.pool.request(
                "POST",
                self.url,
                body=orjson.dumps(body),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                timeout=self.timeout,
                retries=False,
            )
        except NewConnectionError as exc:  # a subclass of TimeoutError in urllib3 2: test it first
            raise BackendUnavailable(f"model server unreachable: {exc}") from exc
        except TimeoutError as exc:
            raise BackendTimeout(f"model server did not answer in {self.timeout.total}s") from exc
        except HTTPError as exc:
            raise BackendUnavailable(f"model server connection failed: {exc}") from exc
        if response.status != 200:
            raise _error_for_status(response.status, _upstream_message(response.data))
        return checked_result(_parse_predictions(response.data), len(instances))


def _parse_predictions(data: bytes) -> BackendResult:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BackendError("model server answered with invalid JSON") from exc
    if not isinstance(document, dict) or not isinstance(document.get("predictions"), list):
        raise BackendError("model server answer has no 'predictions' list")
    return BackendResult(
        predictions=document["predictions"],
        model_version_id=_optional_str(document.get("modelVersionId")),
        deployed_model_id=_optional_str(document.get("deployedModelId")),
    )


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _upstream_message(data: bytes) -> str:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data[:_MAX_MESSAGE].decode("utf-8", "replace")
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
