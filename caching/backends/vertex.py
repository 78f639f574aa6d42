"""``vertex`` backend: Vertex AI online prediction through google-cloud-aiplatform.

Nothing from Google's libraries is imported until the first miss of a vertex model:
they take seconds to import, and a process that serves only hits never needs them.
Each process builds one ``PredictionServiceClient`` per (transport, host) and reuses it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from caching.backends.base import (
    BackendConfigError,
    BackendError,
    BackendMisconfigured,
    BackendRejectedInput,
    BackendResult,
    BackendTimeout,
    BackendUnavailable,
    checked_result,
    connection_failure,
    with_reason,
)

logger = logging.getLogger(__name__)

TARGET_PATTERN = re.compile(
    r"projects/(?P<project>[^/\s]+)/locations/(?P<location>[a-z0-9-]+)/endpoints/(?P<endpoint>[^/\s:]+)"
)
TRANSPORTS = ("grpc", "rest")
# Vertex AI refuses online prediction requests over 1.5 MB; leave room for the envelope.
VERTEX_MAX_REQUEST_BYTES = 1_500_000
_ENVELOPE_BYTES = 1024
_LOGGED_MESSAGE = 4000
# Over REST, google-api-core puts the method and URL in front of the message: not for clients.
_REST_PREFIX = re.compile(r"^[A-Z]+ https?://\S+: ")


def regional_host(location: str) -> str:
    """The Vertex AI API host serving ``location``."""
    return "aiplatform.googleapis.com" if location == "global" else f"{location}-aiplatform.googleapis.com"


class VertexBackend:
    """Calls ``PredictionService.Predict`` on a Vertex AI endpoint.

    ``api_endpoint`` overrides the regional host (a private endpoint, a test server). An
    ``http://host:port`` endpoint is spoken to in clear (plain HTTP, or gRPC without TLS)
    and without credentials, so that tokens never travel in clear.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout_seconds: float,
        api_endpoint: str = "",
        transport: str = "grpc",
        max_request_bytes: int = VERTEX_MAX_REQUEST_BYTES,
    ) -> None:
        match = TARGET_PATTERN.fullmatch(target)
        if match is None:
            raise BackendConfigError(
                f"vertex target must look like projects/P/locations/L/endpoints/E, got {target[:200]!r}"
            )
        if transport not in TRANSPORTS:
            raise BackendConfigError(
                f"vertex transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}"
            )
        if not isinstance(max_request_bytes, int) or max_request_bytes < 10_000:
            raise BackendConfigError("max_request_bytes must be an integer of at least 10000")
        self.target = target
        self.api_endpoint = api_endpoint or regional_host(match["location"])
        self.transport = transport
        self.timeout_seconds = timeout_seconds
        self.max_request_bytes = max_request_bytes
        # The host is part of what computes the predictions (a test server, a private endpoint);
        # the version Vertex reports with each answer does the rest.
        self.identity = self.api_endpoint
        self._prediction_client: Any = None
        self._client_lock = threading.Lock()

    def verify(self) -> None:
        """Nothing to check offline: credentials and the endpoint are tried on the first call."""

    def outdated(self) -> bool:
        """Never: everything that decides its answers is in the model's settings."""
        return False

    def check(self, instances: Sequence[Any], parameters: dict[str, Any] | None) -> None:
        """Nothing: only the deployed model knows what it accepts."""

    def predict(self, instances: Sequence[Any], parameters: dict[str, Any] | None) -> BackendResult:
        """Predict in as few calls as the payload limit allows, all within the model's timeout."""
        from google.protobuf import json_format, struct_pb2

        client = self._client()  # the SDK's first import takes a second: not the model's time
        deadline = time.monotonic() + self.timeout_seconds
        values = [json_format.ParseDict(instance, struct_pb2.Value()) for instance in instances]
        extra: dict[str, Any] = {}
        envelope = _ENVELOPE_BYTES
        if parameters is not None:
            extra["parameters"] = json_format.ParseDict(parameters, struct_pb2.Value())
            envelope += self._encoded_size(extra["parameters"])
        answers = []
        start = 0
        for chunk in self._chunks(values, envelope):
            try:
                answers.append(self._predict_once(client, chunk, extra, deadline))
            except BackendRejectedInput as exc:
                # Vertex numbers instances within this call, not within the instances given.
                raise BackendRejectedInput(str(exc), sent=range(start, start + len(chunk))) from exc
            start += len(chunk)
        predictions = [prediction for answer in answers for prediction in answer.predictions]
        versions = {(answer.model_version_id, answer.deployed_model_id) for answer in answers}
        if len(versions) > 1:
            # Parts of one batch were answered by different deployed models (a traffic
            # split): each prediction is right, but no one version describes them all.
            return checked_result(BackendResult(predictions=predictions, cacheable=False), len(instances))
        (model_version_id, deployed_model_id) = versions.pop()
        return checked_result(BackendResult(predictions, model_version_id, deployed_model_id), len(instances))

    def _chunks(self, values: list[Any], envelope: int) -> Iterator[list[Any]]:
        """Split instances into requests under Vertex's payload limit, keeping their order."""
        budget = self.max_request_bytes - envelope
        chunk: list[Any] = []
        size = 0
        for value in values:
            value_size = self._encoded_size(value)
            if chunk and size + value_size > budget:
                yield chunk
                chunk, size = [], 0
            chunk.append(value)
            size += value_size
        if chunk:
            yield chunk

    def _encoded_size(self, value: Any) -> int:
        """Bytes one instance adds to the request as this transport encodes it."""
        if self.transport == "grpc":
            return int(value.ByteSize()) + 6  # field tag and length prefix
        from google.protobuf import json_format

        # The REST transport sends pretty-printed JSON (indent 2); an instance sits two levels
        # deep, so each of its lines carries four more spaces, and ",\n" separates instances.
        text: str = json_format.MessageToJson(value)
        return len(text) + 4 * (text.count("\n") + 1) + 2

    def _predict_once(
        self, client: Any, values: list[Any], extra: dict[str, Any], deadline: float
    ) -> BackendResult:
        from google.protobuf import json_format

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BackendTimeout(f"Vertex AI did not answer within {self.timeout_seconds}s")
        try:
            response = client.predict(
                endpoint=self.target,
                instances=values,
                retry=_retry(remaining),
                timeout=remaining,
                **extra,
            )
        except Exception as exc:  # google-api-core, google-auth, requests and grpc raise their own
            raise _backend_error(exc, self.timeout_seconds) from exc
        try:
            # Protobuf values to plain JSON (numbers come back as doubles, as Vertex sends them).
            document = json_format.MessageToDict(response._pb)
        except json_format.SerializeToJsonError as exc:  # NaN or Infinity in an answer
            raise BackendError(f"Vertex AI answered with a value JSON cannot carry: {exc}") from exc
        return checked_result(
            BackendResult(
                predictions=document.get("predictions", []),
                model_version_id=document.get("modelVersionId") or None,
                deployed_model_id=document.get("deployedModelId") or None,
            ),
            len(values),
        )

    def _client(self) -> Any:
        """This backend's client, made on its first call (the process's runtime drops it at a fork)."""
        client = self._prediction_client
        if client is None:
            with self._client_lock:
                client = self._prediction_client
                if client is None:
                    client = self._prediction_client = self._new_client()
        return client

    def _new_client(self) -> Any:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.auth.exceptions import GoogleAuthError
        from google.cloud.aiplatform_v1 import PredictionServiceClient

        options = ClientOptions(api_endpoint=self.api_endpoint)
        try:
            if not self.api_endpoint.startswith("http://"):
                return PredictionServiceClient(transport=self.transport, client_options=options)
            if self.transport == "rest":
                anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
                return PredictionServiceClient(
                    transport="rest", credentials=anonymous, client_options=options
                )
            import grpc
            from google.cloud.aiplatform_v1.services.prediction_service.transports.grpc import (
                PredictionServiceGrpcTransport,
            )

            channel = grpc.insecure_channel(
                self.api_endpoint.removeprefix("http://").rstrip("/"),
                options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
            )
            return PredictionServiceClient(transport=PredictionServiceGrpcTransport(channel=channel))
        except GoogleAuthError as exc:  # no Application Default Credentials on this machine
            raise BackendMisconfigured(f"cannot authenticate to Vertex AI: {exc}") from exc


def _retry(deadline: float) -> Any:
    """Back off and retry throttling, unavailability and deadlines, within the model's timeout."""
    import requests
    from google.api_core import exceptions, retry
    from google.auth import exceptions as auth_exceptions

    return retry.Retry(
        predicate=retry.if_exception_type(
            exceptions.TooManyRequests,
            exceptions.ResourceExhausted,
            exceptions.ServiceUnavailable,
            exceptions.DeadlineExceeded,
            requests.exceptions.ConnectionError,
            auth_exceptions.TransportError,  # the token endpoint (metadata server) did not answer
        ),
        initial=0.1,
        maximum=2.0,
        multiplier=2.0,
        timeout=deadline,
    )


def _backend_error(exc: Exception, timeout_seconds: float) -> BackendError:
    """Map what the client library raised to the status and clean message the caller is told."""
    import requests
    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions

    if isinstance(exc, exceptions.RetryError):
        cause = exc.cause
        if cause is None or cause is exc:
            return BackendTimeout(f"Vertex AI did not answer within {timeout_seconds}s")
        return (
            _backend_error(cause, timeout_seconds)
            if isinstance(cause, Exception)
            else BackendError("Vertex AI call failed")
        )
    logger.warning("Vertex AI call failed: %s", str(exc)[:_LOGGED_MESSAGE])
    if isinstance(exc, requests.exceptions.Timeout):
        return BackendTimeout(f"Vertex AI did not answer within {timeout_seconds}s")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return BackendUnavailable(f"Vertex AI unreachable ({connection_failure(exc)})")
    if isinstance(exc, auth_exceptions.TransportError):
        return BackendUnavailable(f"could not get a token for Vertex AI ({connection_failure(exc)})")
    if isinstance(exc, auth_exceptions.GoogleAuthError):
        return BackendMisconfigured(with_reason("cannot authenticate to Vertex AI", str(exc)))
    if not isinstance(exc, exceptions.GoogleAPICallError):
        return BackendError(f"Vertex AI call failed ({type(exc).__name__})")
    # A custom container's own error body travels inside Vertex's message: keep its first clean line.
    message = with_reason(f"Vertex AI answered {exc.code or ''}".strip(), _REST_PREFIX.sub("", exc.message))
    if isinstance(exc, exceptions.BadRequest):
        # Only a request Vertex calls INVALID_ARGUMENT is the client's fault; FAILED_PRECONDITION
        # (no model deployed), OUT_OF_RANGE and the like are the endpoint's.
        status = _rpc_status(exc)
        if status in ("INVALID_ARGUMENT", None):
            return BackendRejectedInput(message)
        return BackendError(f"{message} ({status})")
    if isinstance(
        exc, exceptions.TooManyRequests | exceptions.ResourceExhausted | exceptions.ServiceUnavailable
    ):
        return BackendUnavailable(message)
    if isinstance(exc, exceptions.DeadlineExceeded | exceptions.GatewayTimeout):
        return BackendTimeout(message)
    return BackendError(message)


def _rpc_status(exc: Any) -> str | None:
    """The RPC status name of an API error: from gRPC directly, from the error body over REST."""
    code = getattr(exc, "grpc_status_code", None)
    if code is not None:
        return str(code.name)
    response = getattr(exc, "response", None)
    try:
        status = response.json()["error"]["status"] if response is not None else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return status if isinstance(status, str) else None
