"""Serving predictions through the cache to keys that may ask, and recording the versions it moves to."""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError, close_old_connections

from caching.backends.base import BackendMisconfigured
from caching.core.access import KeyAccess, ModelNotInScope
from caching.core.errors import PredcacheError
from caching.core.spec import CacheSpec, Directives, Prediction, VersionChange
from caching.models import ModelVersionChange
from caching.runtime import get_runtime
from caching.selectors import ServedModel, served_model_get, served_vertex_model_get

logger = logging.getLogger(__name__)


class ModelNotFound(PredcacheError):
    """No model is registered under the requested name (or for the requested Vertex AI endpoint)."""

    code = "model_not_found"

    @classmethod
    def named(cls, name: str) -> ModelNotFound:
        # Clipped: a name from a URL can be as long as the request line.
        return cls(f"no model is registered as {name[:128]!r}")

    @classmethod
    def for_endpoint(cls, endpoint: str) -> ModelNotFound:
        return cls(f"no vertex model is registered for {endpoint[:300]!r}")


def prediction_admit(*, access: KeyAccess, model_name: str) -> None:
    """Let a request of the key with ``access`` predict on ``model_name`` now, or refuse it.

    ModelNotInScope (403) for a name outside the key's scope, registered or not; RateLimited
    (429) past its rate. Checked before the body is read, as DRF checks permissions.
    """
    if not access.may_predict(model_name):
        raise ModelNotInScope.named(model_name, access)
    if access.rate is not None:
        get_runtime().rate_limiter.admit(access.key, access.rate)


def prediction_serve(
    *,
    model_name: str,
    instances: list[Any],
    parameters: dict[str, Any] | None,
    directives: Directives | None = None,
) -> tuple[ServedModel, Prediction]:
    """Answer a predict request through the cache."""
    served = served_model_get(name=model_name)
    if served is None:
        raise ModelNotFound.named(model_name)
    return served, served_prediction(
        served=served, instances=instances, parameters=parameters, directives=directives
    )


def vertex_model_for_key(*, access: KeyAccess, endpoint: str) -> ServedModel:
    """The model registered for ``projects/P/locations/L/endpoints/E``, if the key may use it.

    A scoped key gets ModelNotInScope (403) for any endpoint but those of its models, registered
    or not; a key of every model gets ModelNotFound (404) for an unregistered one.
    """
    served = served_vertex_model_get(endpoint=endpoint)
    if served is None or not access.may_predict(served.name):
        if access.models is not None:
            raise ModelNotInScope.for_endpoint(endpoint, access)
        raise ModelNotFound.for_endpoint(endpoint)
    return served


def vertex_prediction_admit(*, access: KeyAccess, endpoint: str) -> ServedModel:
    """The endpoint's model, if the key may predict on it now: 403, 404, then RateLimited (429)."""
    served = vertex_model_for_key(access=access, endpoint=endpoint)
    if access.rate is not None:
        get_runtime().rate_limiter.admit(access.key, access.rate)
    return served


def served_prediction(
    *,
    served: ServedModel,
    instances: list[Any],
    parameters: dict[str, Any] | None,
    directives: Directives | None = None,
    client_request: bool = True,
) -> Prediction:
    """Answer ``instances`` for a model already looked up; records the version change it caused.

    Background work (refresh-ahead, warming) passes ``client_request=False``: not counted as a
    request, nor sampled as hot.
    """
    if served.backend is None:
        raise BackendMisconfigured(f"model {served.name!r} is misconfigured: {served.config_error}")
    prediction = get_runtime().cache.predict(
        served.spec,
        served.backend,
        instances,
        parameters,
        directives,
        version_listener=background_version_change_record,
        client_request=client_request,
    )
    if prediction.version_change is not None:
        model_version_change_record(
            model_id=served.model_id, model_name=served.name, change=prediction.version_change
        )
    return prediction


def model_version_change_record(*, model_id: int, model_name: str, change: VersionChange) -> None:
    """Keep the history of the versions a model's cache followed (shown in the admin and stats)."""

    def clipped(field: str, value: str | None) -> str:  # versions are backend-supplied text
        return (value or "")[: ModelVersionChange._meta.get_field(field).max_length]

    try:
        ModelVersionChange.objects.create(
            model_id=model_id,
            previous_version=clipped("previous_version", change.previous),
            version=clipped("version", change.current),
            model_version_id=clipped("model_version_id", change.model_version_id),
            deployed_model_id=clipped("deployed_model_id", change.deployed_model_id),
        )
    except DatabaseError:
        # The cache has moved already and the client's answer is right: losing one history
        # row must not turn it into an error.
        logger.exception("could not record the version change of %s", model_name)


def background_version_change_record(spec: CacheSpec, change: VersionChange) -> None:
    """The read-through cache's listener for version changes found by background refreshes."""
    try:
        model_version_change_record(model_id=spec.model_id, model_name=spec.model_name, change=change)
    finally:
        close_old_connections()  # this runs on a refresh thread, outside any request
