"""The backend Protocol every model server adapter implements, and the errors they raise."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


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


class BackendError(Exception):
    """A model server failed; ``status`` and ``code`` are what the client is told."""

    status = 502
    code = "backend_error"


class BackendUnavailable(BackendError):
    """The model server could not be reached or said it is overloaded."""

    status = 503
    code = "backend_unavailable"


class BackendTimeout(BackendError):
    """The model server did not answer within the model's timeout."""

    status = 504
    code = "backend_timeout"


class BackendRejectedInput(BackendError):
    """The model server refused the instances as invalid: the client's request is at fault.

    ``instance`` is the position, in the instances the backend was given, of the one at
    fault. Backends see only a request's distinct misses, so the message they raise must
    not number instances itself; the read-through cache puts the client's number in front.
    """

    status = 400
    code = "invalid_instances"

    def __init__(self, message: str, *, instance: int | None = None) -> None:
        super().__init__(message)
        self.instance = instance


class BackendMisconfigured(BackendError):
    """The model's backend settings are unusable at request time; an operator must fix them."""

    code = "backend_misconfigured"


class BackendConfigError(ValueError):
    """A model's backend settings are unusable (bad target, path outside the model directory)."""


def checked_result(result: BackendResult, expected: int) -> BackendResult:
    """Guard against a backend answering with the wrong number of predictions."""
    if len(result.predictions) != expected:
        raise BackendError(f"backend returned {len(result.predictions)} predictions for {expected} instances")
    return result
