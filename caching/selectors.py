"""Reads: the models the request path serves (remembered briefly by the runtime so a hit needs no query),
a model's settings, and its counters and cache state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
from django.db.models import OuterRef, QuerySet, Subquery
from django_celery_beat.models import PeriodicTask
from rest_framework_api_key.models import APIKey

from caching.backends.base import Backend, BackendConfigError
from caching.core.access import KeyAccess
from caching.core.canonical import KeyRules
from caching.core.memo import NO_VALUE
from caching.core.spec import CacheSpec
from caching.core.stats import read_stats
from caching.models import ApiKeyGrant, CachePolicy, ModelEndpoint, ModelVersionChange, WarmRun, WarmSet
from caching.runtime import built_runtime, get_runtime


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A registered model as the request path needs it: cache spec plus a ready backend."""

    name: str
    model_id: int
    spec: CacheSpec
    backend: Backend | None
    config_error: str | None = None


def served_model_get(*, name: str) -> ServedModel | None:
    """The model called ``name``, or ``None``; answers from memory for PREDCACHE_CONFIG_CACHE_SECONDS."""
    return _remembered(name, lambda: ModelEndpoint.objects.filter(name=name))


def served_vertex_model_get(*, endpoint: str) -> ServedModel | None:
    """The ``vertex`` model registered for ``projects/P/locations/L/endpoints/E``, or ``None``."""
    return _remembered(
        f"vertex:{endpoint}",  # model names cannot contain ':', so this never shadows one
        lambda: ModelEndpoint.objects.filter(backend="vertex", target=endpoint).order_by("pk"),
    )


def _remembered(key: str, query: Callable[[], QuerySet[ModelEndpoint]]) -> ServedModel | None:
    memory = get_runtime().served_models
    remembered = memory.get(key)
    if remembered is not NO_VALUE:
        return cast(ServedModel | None, remembered)
    model = query().select_related("policy").first()
    served = None if model is None else served_model_build(model=model)
    memory.put(key, served)  # unknown names too: a 404 costs no query either
    return served


def served_models_forget() -> None:
    """Drop this process's copies so the next request reads the database."""
    runtime = built_runtime()
    if runtime is not None:
        runtime.served_models.clear()


def served_model_build(*, model: ModelEndpoint) -> ServedModel:
    """Turn a database row into what the request path uses."""
    policy = getattr(model, "policy", None) or CachePolicy(model=model)
    try:
        backend: Backend | None = get_runtime().backends.get(
            model.pk, model.backend_settings(), model.backend_adapter
        )
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
        l1=policy.l1,
    )
    get_runtime().stats.name_model(spec.namespace, spec.model_name)  # the metrics' model label
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


def api_key_access_get(*, api_key: APIKey) -> KeyAccess:
    """What ``api_key`` may do on the predict routes: its grant's models and rate, its expiry."""
    grant = ApiKeyGrant.objects.filter(api_key_id=api_key.pk).first()
    return KeyAccess(
        key=api_key.prefix,
        models=None if grant is None else grant.scope,
        rate=None if grant is None else grant.rate,
        expires_at=None if api_key.expiry_date is None else api_key.expiry_date.timestamp(),
    )


def api_keys_list() -> list[APIKey]:
    """Every API key, newest first, with its grant (``grant`` absent: it may only predict, on any model)."""
    return list(APIKey.objects.select_related("grant").order_by("-created"))


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


def model_stats(*, model: ModelEndpoint) -> dict[str, Any]:
    """Counters and cache state of ``model`` as Redis holds them."""
    runtime = get_runtime()
    namespace = model_namespace(model=model)
    counters = read_stats(runtime.client, runtime.keyspace, namespace)
    looked_up = counters["hits"] + counters["misses"]
    version, retired = runtime.store.followed_version(namespace)
    last_change = model.version_changes.first()
    # Estimates: each request served without the cache would have made one backend call, and
    # each hit would have cost what an answered instance costs the model on average.
    ms_per_instance = (
        counters["backend_us"] / 1000 / counters["backend_answered"] if counters["backend_answered"] else None
    )
    return {
        "model": model.name,
        **counters,
        "hit_ratio": round(counters["hits"] / looked_up, 4) if looked_up else None,
        "backend_ms_per_instance": None if ms_per_instance is None else round(ms_per_instance, 3),
        "backend_calls_saved": max(0, counters["requests"] - counters["backend_calls"]),
        "backend_seconds_saved": None
        if ms_per_instance is None
        else round(counters["hits"] * ms_per_instance / 1000, 3),
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


def schedules_list() -> list[PeriodicTask]:
    """The periodic tasks predcache keeps (``predcache:*``), by name."""
    return list(
        PeriodicTask.objects.filter(name__startswith="predcache:")
        .select_related("interval", "crontab")
        .order_by("name")
    )


def warm_sets_list(*, model: ModelEndpoint | None = None) -> list[tuple[WarmSet, WarmRun | None]]:
    """Warm sets (of one model, or all) by model and name, each with its latest run (None: never run)."""
    newest = WarmRun.objects.filter(warm_set=OuterRef("pk")).order_by("-queued_at", "-id").values("pk")[:1]
    warm_sets = (
        WarmSet.objects.select_related("model").defer("instances").annotate(latest_run=Subquery(newest))
    )
    if model is not None:
        warm_sets = warm_sets.filter(model=model)
    found = list(warm_sets)
    runs = WarmRun.objects.in_bulk([warm_set.latest_run for warm_set in found if warm_set.latest_run])
    return [(warm_set, runs.get(warm_set.latest_run)) for warm_set in found]


def warm_runs_recent(*, model: ModelEndpoint, limit: int = 10) -> list[WarmRun]:
    """The latest warm runs of ``model``, newest first."""
    return list(WarmRun.objects.filter(model=model).select_related("warm_set")[:limit])
