"""Writes and actions: serving predictions, registering models, purging, API keys."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from rest_framework_api_key.models import APIKey

from caching.backends.base import BackendMisconfigured
from caching.core.readthrough import Prediction
from caching.core.stats import read_stats
from caching.models import CachePolicy, ModelEndpoint, ModelVersionChange
from caching.runtime import get_runtime
from caching.selectors import ServedModel, model_namespace, served_model_get, served_vertex_model_get


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
    ModelVersionChange.objects.create(
        model_id=served.model_id,
        previous_version=change.previous,
        version=change.current,
        model_version_id=change.model_version_id or "",
        deployed_model_id=change.deployed_model_id or "",
    )


def model_cache_purge(*, model: ModelEndpoint, model_version: str | None = None) -> None:
    """Make cached predictions of ``model`` (or of one version) unreachable now.

    Raises CacheUnavailable when Redis does not answer: the purge did not happen.
    """
    get_runtime().store.purge(model_namespace(model=model), model_version)


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
