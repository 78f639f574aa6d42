"""Writes and actions: serving predictions, registering models, purging, API keys."""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError, transaction
from rest_framework_api_key.models import APIKey

from caching.backends.base import BackendMisconfigured
from caching.core.readthrough import Prediction
from caching.core.stats import read_stats
from caching.models import CachePolicy, ModelEndpoint, ModelVersionChange
from caching.runtime import get_runtime
from caching.selectors import ServedModel, model_namespace, served_model_get, served_vertex_model_get

logger = logging.getLogger(__name__)


class ModelNotFound(LookupError):
    """No model is registered under the requested name."""


def prediction_serve(
    *, model_name: str, instances: list[Any], parameters: dict[str, Any] | None
) -> tuple[ServedModel, Prediction]:
    """Answer a predict request through the cache."""
    served = served_model_get(name=model_name)
    if served is None:
        raise ModelNotFound(model_name)
    return served, served_prediction(served=served, instances=instances, parameters=parameters)


def vertex_prediction_serve(
    *, endpoint: str, instances: list[Any], parameters: dict[str, Any] | None
) -> tuple[ServedModel, Prediction]:
    """Answer a request made to the Vertex AI route for ``projects/P/locations/L/endpoints/E``."""
    served = served_vertex_model_get(endpoint=endpoint)
    if served is None:
        raise ModelNotFound(endpoint)
    return served, served_prediction(served=served, instances=instances, parameters=parameters)


def served_prediction(
    *, served: ServedModel, instances: list[Any], parameters: dict[str, Any] | None
) -> Prediction:
    if served.backend is None:
        raise BackendMisconfigured(f"model {served.name!r} is misconfigured: {served.config_error}")
    prediction = get_runtime().cache.predict(served.spec, served.backend, instances, parameters)
    if prediction.version_change is not None:
        model_version_change_record(served=served, prediction=prediction)
    return prediction


@transaction.atomic
def model_upsert(
    *,
    name: str,
    backend: str,
    target: str,
    api_endpoint: str | None = None,
    timeout_seconds: float | None = None,
    model_version: str | None = None,
    options: dict[str, Any] | None = None,
    ttl_seconds: int | None = None,
    enabled: bool | None = None,
) -> tuple[ModelEndpoint, bool]:
    """Create or update a model and its policy; options left as ``None`` keep their value."""
    model = ModelEndpoint.objects.filter(name=name).first()
    created = model is None
    if model is None:
        model = ModelEndpoint(name=name)
    model.backend = backend
    model.target = target
    for field, value in (
        ("api_endpoint", api_endpoint),
        ("timeout_seconds", timeout_seconds),
        ("model_version", model_version),
        ("options", options),
    ):
        if value is not None:
            setattr(model, field, value)
    model.full_clean()
    model.save()
    policy = CachePolicy.objects.filter(model=model).first() or CachePolicy(model=model)
    if ttl_seconds is not None:
        policy.ttl_seconds = ttl_seconds
    if enabled is not None:
        policy.enabled = enabled
    policy.full_clean()
    policy.save()
    return model, created


def model_version_change_record(*, served: ServedModel, prediction: Prediction) -> None:
    """Keep the history of the versions a model's cache followed (shown in the admin and stats)."""
    change = prediction.version_change
    assert change is not None

    def clipped(field: str, value: str | None) -> str:  # versions are backend-supplied text
        return (value or "")[: ModelVersionChange._meta.get_field(field).max_length]

    try:
        ModelVersionChange.objects.create(
            model_id=served.model_id,
            previous_version=clipped("previous_version", change.previous),
            version=clipped("version", change.current),
            model_version_id=clipped("model_version_id", change.model_version_id),
            deployed_model_id=clipped("deployed_model_id", change.deployed_model_id),
        )
    except DatabaseError:
        # The cache has moved already and the client's answer is right: losing one history
        # row must not turn it into an error.
        logger.exception("could not record the version change of %s", served.name)


class PurgeRefused(ValueError):
    """A purge that would not make anything unreachable; nothing was changed."""


def model_cache_purge(*, model: ModelEndpoint, model_version: str | None = None) -> str:
    """Make cached predictions of ``model`` (or of one version) unreachable now; says what it did.

    Raises CacheUnavailable when Redis does not answer (the purge did not happen) and
    PurgeRefused when ``model_version`` names no version whose entries could be served.
    """
    store = get_runtime().store
    namespace = model_namespace(model=model)
    if model_version is None:
        store.purge(namespace)
        return f"purged every cached prediction of {model.name}"
    if model.model_version:  # pinned (or labelled): only that version's entries are ever served
        if model_version != model.model_version:
            raise PurgeRefused(
                f"{model.name} is pinned to version {model.model_version!r}; "
                f"no entry of {model_version!r} is served"
            )
        store.purge(namespace, model_version)
        return f"purged version {model_version!r} of {model.name}"
    # The cache follows the version the backend reports: only the followed one is served.
    followed, retired = store.followed_version(namespace)
    if model_version in _version_names(followed):
        store.purge(namespace, keep_versions=True)
        return f"purged version {followed or model_version!r} of {model.name} (the version it follows)"
    if any(model_version in _version_names(tag) for tag in retired):
        return f"version {model_version!r} of {model.name} is retired: its entries are not served"
    raise PurgeRefused(
        f"{model.name} has not seen version {model_version!r} (it follows {followed or 'no version'!r})"
    )


def _version_names(tag: str) -> set[str]:
    """The names an operator may use for a version tag: the tag, its deployed model, its version."""
    deployed, _, version = tag.partition("/")
    return {tag, deployed, version} - {""} if tag else {""}


def model_stats(*, model: ModelEndpoint) -> dict[str, Any]:
    """Counters and cache state of ``model`` as Redis holds them."""
    runtime = get_runtime()
    namespace = model_namespace(model=model)
    counters = read_stats(runtime.client, runtime.keyspace, namespace)
    looked_up = counters["hits"] + counters["misses"]
    version, retired = runtime.store.followed_version(namespace)
    last_change = model.version_changes.first()
    return {
        "model": model.name,
        **counters,
        "hit_ratio": round(counters["hits"] / looked_up, 4) if looked_up else None,
        "generation": runtime.store.generation(namespace),
        "version": version,
        "retired_versions": retired,
        "last_version_change": None
        if last_change is None
        else {
            "previous_version": last_change.previous_version,
            "version": last_change.version,
            "observed_at": last_change.observed_at.isoformat(),
        },
    }


def api_key_create(*, label: str) -> str:
    """Create an API key and return it; only its hash is stored, so it cannot be shown again."""
    _, key = APIKey.objects.create_key(name=label)
    return key
