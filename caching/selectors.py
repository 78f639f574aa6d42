"""Reads: the models the request path serves, cached briefly in process so a hit needs no query."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings
from django.db.models import QuerySet
from rest_framework_api_key.models import APIKey

from caching.backends.base import Backend, BackendConfigError
from caching.core.canonical import KeyRules
from caching.core.spec import CacheSpec
from caching.models import ApiKeyGrant, BackendKind, CachePolicy, ModelEndpoint, ModelVersionChange
from caching.runtime import get_runtime


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A registered model as the request path needs it: cache spec plus a ready backend."""

    name: str
    model_id: int
    spec: CacheSpec
    backend: Backend | None
    config_error: str | None = None


_served: dict[str, tuple[float, ServedModel | None]] = {}
_served_lock = threading.Lock()


def served_model_get(*, name: str) -> ServedModel | None:
    """The model called ``name``, or ``None``; answers from memory for PREDCACHE_CONFIG_CACHE_SECONDS."""
    return _remembered(name, lambda: ModelEndpoint.objects.filter(name=name))


def served_vertex_model_get(*, endpoint: str) -> ServedModel | None:
    """The ``vertex`` model registered for ``projects/P/locations/L/endpoints/E``, or ``None``."""
    return _remembered(
        f"vertex:{endpoint}",  # model names cannot contain ':', so this never shadows one
        lambda: ModelEndpoint.objects.filter(backend=BackendKind.VERTEX, target=endpoint).order_by("pk"),
    )


def _remembered(key: str, query: Callable[[], QuerySet[ModelEndpoint]]) -> ServedModel | None:
    now = time.monotonic()
    cached = _served.get(key)
    if cached is not None and now - cached[0] < settings.PREDCACHE_CONFIG_CACHE_SECONDS:
        return cached[1]
    model = query().select_related("policy").first()
    served = None if model is None else served_model_build(model=model)
    with _served_lock:
        if len(_served) > 10_000:  # unknown names are remembered too; keep the map bounded
            _served.clear()
        _served[key] = (now, served)
    return served


def served_models_forget() -> None:
    """Drop this process's copies so the next request reads the database."""
    with _served_lock:
        _served.clear()


def served_model_build(*, model: ModelEndpoint) -> ServedModel:
    """Turn a database row into what the request path uses."""
    policy = getattr(model, "policy", None) or CachePolicy(model=model)
    try:
        backend: Backend | None = model.backend_adapter()
        config_error = None
    except BackendConfigError as exc:
        backend, config_error = None, str(exc)
    rules = KeyRules(
        round_decimals=policy.round_decimals,
        round_significant=policy.round_significant,
        ignore_fields=tuple(policy.ignore_fields or ()),
    )
    spec = CacheSpec(
        namespace=model_namespace(model=model),
        model_name=model.name,
        model_identity=model_identity(model=model, backend=backend, rules=rules),
        model_version=model.model_version,
        ttl_seconds=policy.ttl_seconds,
        mode=policy.mode,
        ttl_jitter=policy.ttl_jitter,
        stale_while_revalidate=policy.stale_while_revalidate_seconds,
        stale_if_error=policy.stale_if_error_seconds,
        key_rules=rules,
        admit_after=policy.admit_after,
        max_entry_bytes=policy.max_entry_bytes,
        compress_over=policy.compress_over_bytes,
        compression=policy.compression,
        max_age=policy.max_age_seconds,
        backend_timeout=model.timeout_seconds,
        model_id=model.pk,
    )
    return ServedModel(
        name=model.name, model_id=model.pk, spec=spec, backend=backend, config_error=config_error
    )


def model_identity(*, model: ModelEndpoint, backend: Backend | None, rules: KeyRules) -> str:
    """Everything about a model that decides its keys' meaning, so a change starts a fresh cache."""
    options = orjson.dumps(model.options or {}, option=orjson.OPT_SORT_KEYS).decode()
    backend_identity = backend.identity if backend is not None else ""
    return "\x00".join((model.name, model.backend, model.target, options, backend_identity, rules.describe()))


def model_namespace(*, model: ModelEndpoint) -> str:
    """The Redis namespace holding ``model``'s entries, generation and counters."""
    return get_runtime().keyspace.namespace(model.pk)


def vertex_endpoint_deployments(*, model_id: int) -> list[dict[str, str]]:
    """The deployed model the cache follows, as Vertex AI's ``deployedModels`` lists it."""
    change = ModelVersionChange.objects.filter(model_id=model_id).order_by("-observed_at", "-id").first()
    if change is None or not change.deployed_model_id:
        return []
    deployed = {"id": change.deployed_model_id}
    if change.model_version_id:
        deployed["modelVersionId"] = change.model_version_id
    return [deployed]


def api_key_may_administer(*, api_key: APIKey) -> bool:
    """Whether ``api_key`` was granted the management API (read fresh: revoking takes effect now)."""
    return ApiKeyGrant.objects.filter(api_key_id=api_key.pk, may_administer=True).exists()


def model_settings_describe(*, model: ModelEndpoint) -> dict[str, Any]:
    """A model's registered settings and its whole cache policy, as plain JSON values."""
    policy = getattr(model, "policy", None) or CachePolicy(model=model)

    def fields(row: ModelEndpoint | CachePolicy, skip: set[str]) -> dict[str, Any]:
        values = {}
        for field in row._meta.concrete_fields:
            if field.name not in skip:
                value = getattr(row, field.attname)
                values[field.name] = value.isoformat() if hasattr(value, "isoformat") else value
        return values

    return {**fields(model, {"id"}), "policy": fields(policy, {"id", "model"})}
