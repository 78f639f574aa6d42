"""The backend Protocol every model server adapter implements, and the errors they raise."""

from __future__ import annotations

import http.client
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from caching.core.errors import PredcacheError


@dataclass(frozen=True, slots=True)
class BackendResult:
    """Predictions for the instances a backend was given, in the same order."""

    predictions: list[Any]
    model_version_id: str | None = None
    deployed_model_id: str | None = None
    # False when no single version describes all predictions (parts of a batch answered
    # by different deployed models): they are returned to the client but not stored.
    cacheable: bool = True


class Backend(Protocol):
    """A model server: turns instances (plus request parameters) into predictions.

    ``identity`` names what, beyond the model's registered settings, decides its
    predictions (the version of a model file, say); it is part of every cache key.
    """

    identity: str

    def predict(self, instances: Sequence[Any], parameters: dict[str, Any] | None) -> BackendResult:
        """Return one prediction per instance, in order, or raise a :class:`BackendError`."""
        ...

    def verify(self) -> None:
        """Check the settings more deeply than construction does (load a model file, say).

        May be slow: for the admin and the CLI, never the request path. Raises
        :class:`BackendConfigError`.
        """
        ...

    def outdated(self) -> bool:
        """Whether this backend no longer describes its model (a replaced model file): build it again.

        Asked each time the process re-reads the model's settings, so it must be cheap.
        """
        ...

    def check(self, instances: Sequence[Any], parameters: dict[str, Any] | None) -> None:
        """Raise :class:`BackendRejectedInput` for instances this backend can tell are invalid unaided.

        No I/O: only what the backend knows already (a loaded model's feature count, a model
        server's declared inputs). Called when the model's circuit breaker is open, so that
        invalid input still gets its 400 rather than the model's 503.
        """
        ...


class BackendError(PredcacheError):
    """A model server failed; ``code`` (and the status it answers) is what the client is told."""

    code = "backend_error"


class BackendUnavailable(BackendError):
    """The model server could not be reached or said it is overloaded."""

    code = "backend_unavailable"


class BackendTimeout(BackendError):
    """The model server did not answer within the model's timeout."""

    code = "backend_timeout"


class BackendRejectedInput(BackendError):
    """The model server refused the instances as invalid: the client's request is at fault.

    Backends see only a request's distinct misses, so numbers in their messages are not the
    client's. ``instance`` is the position, in the instances the backend was given, of the
    one at fault (the read-through cache puts the client's number in front). A model
    server's own message may number instances itself, within the call it was sent:
    ``sent`` then lists which of the backend's instances that call held, in order (None:
    all of them), and the read-through cache renumbers the message for the client.
    """

    code = "invalid_instances"

    def __init__(
        self, message: str, *, instance: int | None = None, sent: Sequence[int] | None = None
    ) -> None:
        super().__init__(message)
        self.instance = instance
        self.sent = sent


class BackendMisconfigured(BackendError):
    """The model's backend settings are unusable at request time; an operator must fix them."""

    code = "backend_misconfigured"


class BackendConfigError(ValueError):
    """A model's backend settings are unusable (bad target, path outside the model directory)."""


# How model servers number instances in their messages: "instance 3", "instance #3", "instances[3]",
# and TF Serving's "element: 3" (other numbers, "element 2" of a row say, are not instances).
_INSTANCE_NUMBER = re.compile(r"\b(instance\s+#?|instances\s*\[\s*|element:\s*)(\d+)", re.IGNORECASE)


def client_numbered(exc: BackendRejectedInput, positions: Sequence[int]) -> BackendRejectedInput:
    """``exc`` with its instances numbered as the client sent them.

    ``positions[i]`` is the client's number of the backend's instance ``i`` (backends see a
    request's distinct misses only). Numbers in a model server's own message count within
    the call it was sent (``exc.sent``); when that call held one instance, it is named.
    """
    sent = (
        list(positions) if exc.sent is None else [positions[i] for i in exc.sent if 0 <= i < len(positions)]
    )

    def renumber(match: re.Match[str]) -> str:
        number = int(match.group(2))
        return f"{match.group(1)}{sent[number]}" if number < len(sent) else match.group(0)

    message, renumbered = _INSTANCE_NUMBER.subn(renumber, str(exc))
    if exc.instance is not None and 0 <= exc.instance < len(positions):
        message = f"instance {positions[exc.instance]}: {message}"
    elif not renumbered and len(sent) == 1:
        message = f"instance {sent[0]}: {message}"
    return BackendRejectedInput(message)


def checked_result(result: BackendResult, expected: int) -> BackendResult:
    """Guard against a backend answering with the wrong number of predictions."""
    if len(result.predictions) != expected:
        raise BackendError(f"backend returned {len(result.predictions)} predictions for {expected} instances")
    return result


# --- what a client may read of an upstream failure ---------------------------------------------

REASON_LIMIT = 200
# Server internals that a reason must not carry to clients: tracebacks and stack frames, object
# reprs, URLs (internal hosts, credentials), and paths of files or directories.
_INTERNALS = re.compile(
    r"Traceback \(most recent call last\)"
    r"|\bFile \""
    r"|\bat 0x[0-9a-fA-F]+"  # <module.Thing object at 0x7f...>
    r"|\(\w+\.(?:java|kt|scala|go|rs|cc?|cpp):\d+\)"  # stack frames of other languages
    r"|\b[a-z][a-z0-9+.-]*://"  # any URL
    r"|(?:^|[\s\"'(=:])/[\w.@+-]+/"  # an absolute path: /srv/model/...
    r"|\b[\w.-]+/[\w./-]*\.(?:py|pyc|so|joblib|pkl|pt|onnx|json|ya?ml|cfg|ini|log|txt|bin)\b"
    r"|\b[A-Za-z]:\\"  # C:\\...
)


def client_reason(text: str | None) -> str | None:
    """The one-line reason from an upstream error that a client may read, or None if it has none.

    The first non-empty line, at most ``REASON_LIMIT`` characters; None when it shows server
    internals (a traceback, a path, a URL, an object repr) or is an HTML page. The whole text
    belongs in the server's log, not in the client's answer.
    """
    if not text:
        return None
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if not line or line.startswith("<") or _INTERNALS.search(line):
        return None
    if len(line) > REASON_LIMIT:
        line = line[: REASON_LIMIT - 1].rstrip() + "…"
    return line


def with_reason(summary: str, text: str | None) -> str:
    """``summary``, followed by the upstream's clean one-line reason when it has one."""
    reason = client_reason(text)
    return f"{summary}: {reason}" if reason else summary


# The first match in an exception's chain names what went wrong with the connection.
_CONNECTION_FAILURES: tuple[tuple[type[BaseException], str], ...] = (
    (http.client.RemoteDisconnected, "connection closed before an answer"),
    (socket.gaierror, "host name not found"),
    (ssl.SSLError, "TLS failed"),
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "connection reset by the server"),
    (BrokenPipeError, "connection closed by the server"),
    (ConnectionAbortedError, "connection aborted"),
    (TimeoutError, "connection timed out"),
)


def connection_failure(exc: BaseException) -> str:
    """A short, repr-free description of why a connection failed, found along the exception's chain."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        for kind, description in _CONNECTION_FAILURES:
            if isinstance(current, kind):
                return description
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        pending.extend(item for item in linked if isinstance(item, BaseException))
    return "connection failed"
