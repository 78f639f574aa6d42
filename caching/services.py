"""Writes and actions: serving predictions, registering models, purging, API keys."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, close_old_connections, connections, transaction
from django.utils import timezone
from rest_framework_api_key.models import APIKey

from caching.backends.base import BackendMisconfigured
from caching.core.keys import version_tag
from caching.core.spec import CacheSpec, Directives, Prediction, VersionChange
from caching.core.stats import read_stats
from caching.models import (
    ApiKeyGrant,
    CachePolicy,
    ModelEndpoint,
    ModelVersionChange,
    PurgeRecord,
    PurgeScope,
)
from caching.runtime import get_runtime
from caching.selectors import ServedModel, model_namespace, served_model_get, served_vertex_model_get

logger = logging.getLogger(__name__)


# Passed to model_upsert for a nullable policy field: set it to empty (None keeps the value).
CLEAR: Any = object()


class ModelNotFound(LookupError):
    """No model is registered under the requested name."""


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
        raise ModelNotFound(model_name)
    return served, served_prediction(
        served=served, instances=instances, parameters=parameters, directives=directives
    )


def vertex_prediction_serve(
    *,
    endpoint: str,
    instances: list[Any],
    parameters: dict[str, Any] | None,
    directives: Directives | None = None,
) -> tuple[ServedModel, Prediction]:
    """Answer a request made to the Vertex AI route for ``projects/P/locations/L/endpoints/E``."""
    served = served_vertex_model_get(endpoint=endpoint)
    if served is None:
        raise ModelNotFound(endpoint)
    return served, served_prediction(
        served=served, instances=instances, parameters=parameters, directives=directives
    )


def served_prediction(
    *,
    served: ServedModel,
    instances: list[Any],
    parameters: dict[str, Any] | None,
    directives: Directives | None = None,
) -> Prediction:
    if served.backend is None:
        raise BackendMisconfigured(f"model {served.name!r} is misconfigured: {served.config_error}")
    prediction = get_runtime().cache.predict(served.spec, served.backend, instances, parameters, directives)
    if prediction.version_change is not None:
        model_version_change_record(
            model_id=served.model_id, model_name=served.name, change=prediction.version_change
        )
    return prediction


@transaction.atomic
def model_upsert(
    *,
    name: str,
    backend: str | None = None,
    target: str | None = None,
    api_endpoint: str | None = None,
    timeout_seconds: float | None = None,
    model_version: str | None = None,
    options: dict[str, Any] | None = None,
    **policy_fields: Any,
) -> tuple[ModelEndpoint, bool]:
    """Create or update a model and its policy; arguments left as ``None`` keep their value.

    ``backend`` and ``target`` are needed only to create a model. ``policy_fields`` holds
    :class:`CachePolicy` fields (``ttl_seconds=60``, ``mode="bypass"``...). Raises
    ValidationError for invalid values, and changes nothing then.
    """
    unknown = set(policy_fields) - {field.name for field in CachePolicy._meta.get_fields()} - {"model", "id"}
    if unknown:
        raise TypeError(f"unknown policy field(s): {', '.join(sorted(unknown))}")
    model = ModelEndpoint.objects.filter(name=name).first()
    created = model is None
    if model is None:
        if backend is None or target is None:
            raise ValidationError(f"{name!r} is a new model: give its backend and target")
        model = ModelEndpoint(name=name)
    for field, value in (
        ("backend", backend),
        ("target", target),
        ("api_endpoint", api_endpoint),
        ("timeout_seconds", timeout_seconds),
        ("model_version", model_version),
        ("options", options),
    ):
        if value is not None:
            setattr(model, field, value)
    model.full_clean()
    model.save()
    policy_row = CachePolicy.objects.filter(model=model).first() or CachePolicy(model=model)
    for field, value in policy_fields.items():
        if value is not None:
            setattr(policy_row, field, None if value is CLEAR else value)
    policy_row.full_clean()
    policy_row.save()
    return model, created


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


class PurgeRefused(ValueError):
    """A purge that would not make anything unreachable; nothing was changed."""


@dataclass(frozen=True, slots=True)
class PurgeOutcome:
    """What a purge did, in words for operators, and its record (None: nothing was purged)."""

    message: str
    record: PurgeRecord | None


def model_cache_purge(
    *, model: ModelEndpoint, model_version: str | None = None, requested_by: str, reclaim: bool = True
) -> PurgeOutcome:
    """Make cached predictions of ``model`` (or of one version) unreachable now, and record it.

    O(1): a generation swap. With ``reclaim`` (and PREDCACHE_RECLAIM_AFTER_PURGE), a
    background thread frees the purged entries' memory once the transaction commits.
    Raises CacheUnavailable when Redis does not answer (the purge did not happen) and
    PurgeRefused when ``model_version`` names no version whose entries could be served.
    """
    message, purged = _generation_swap(model=model, model_version=model_version)
    if not purged:
        return PurgeOutcome(message, None)
    record = PurgeRecord.objects.create(
        model=model,
        scope=PurgeScope.MODEL if model_version is None else PurgeScope.VERSION,
        version=model_version or "",
        requested_by=_requester(requested_by),
    )
    if reclaim and settings.PREDCACHE_RECLAIM_AFTER_PURGE:
        model_id = model.pk
        transaction.on_commit(lambda: _reclaim_in_background(model_id))
    return PurgeOutcome(message, record)


def _generation_swap(*, model: ModelEndpoint, model_version: str | None) -> tuple[str, bool]:
    """Swap the generation that makes the entries unreachable; says what it did, and whether it did."""
    store = get_runtime().store
    namespace = model_namespace(model=model)
    if model_version is None:
        store.purge(namespace)
        return f"purged every cached prediction of {model.name}", True
    if model.model_version:  # pinned (or labelled): only that version's entries are ever served
        if model_version != model.model_version:
            raise PurgeRefused(
                f"{model.name} is pinned to version {model.model_version!r}; "
                f"no entry of {model_version!r} is served"
            )
        store.purge(namespace, model_version)
        return f"purged version {model_version!r} of {model.name}", True
    # The cache follows the version the backend reports: only the followed one is served.
    followed, retired = store.followed_version(namespace)
    if model_version in _version_names(followed):
        store.purge(namespace, keep_versions=True)
        return f"purged version {followed or model_version!r} of {model.name} (the version it follows)", True
    if any(model_version in _version_names(tag) for tag in retired):
        return f"version {model_version!r} of {model.name} is retired: its entries are not served", False
    raise PurgeRefused(
        f"{model.name} has not seen version {model_version!r} (it follows {followed or 'no version'!r})"
    )


def model_instances_purge(
    *,
    model: ModelEndpoint,
    instances: Sequence[Any],
    parameters: dict[str, Any] | None = None,
    requested_by: str,
) -> PurgeOutcome:
    """Delete the cached predictions of ``instances`` (asked with ``parameters``) now, and record it.

    One UNLINK of exactly those entries; other instances, parameters and models keep theirs.
    Raises InvalidJSON for an instance or parameters that cannot be keyed, and CacheUnavailable.
    """
    served = served_model_get(name=model.name)
    if served is None:
        raise ModelNotFound(model.name)
    runtime = get_runtime()
    digests = runtime.cache.instance_digests(served.spec, instances, parameters)
    removed = runtime.store.delete_entries(served.spec.namespace, digests)
    record = PurgeRecord.objects.create(
        model=model,
        scope=PurgeScope.INSTANCES,
        instances=len(instances),
        entries_removed=removed,
        requested_by=_requester(requested_by),
    )
    message = f"removed {removed} cached prediction(s) of {len(instances)} instance(s) of {model.name}"
    return PurgeOutcome(message, record)


def _requester(requested_by: str) -> str:
    return requested_by[: PurgeRecord._meta.get_field("requested_by").max_length]


def model_cache_reclaim(*, model: ModelEndpoint) -> int:
    """Free the memory of ``model``'s entries that can no longer be served; returns how many.

    The count goes on the newest purge record still waiting for it; older waiting ones get
    the time only (one walk cannot tell which purge made an entry unreachable).
    """
    waiting = list(
        PurgeRecord.objects.filter(model=model, reclaimed_at__isnull=True)
        .exclude(scope=PurgeScope.INSTANCES)
        .values_list("pk", flat=True)
    )
    freed = get_runtime().store.reclaim(model_namespace(model=model), _entry_liveness(model=model))
    if waiting:
        now = timezone.now()
        newest = max(waiting)
        PurgeRecord.objects.filter(pk=newest).update(entries_reclaimed=freed, reclaimed_at=now)
        PurgeRecord.objects.filter(pk__in=waiting).exclude(pk=newest).update(reclaimed_at=now)
    return freed


def _entry_liveness(*, model: ModelEndpoint) -> Callable[[dict[str, Any]], bool]:
    """Judges an entry's header against the model's state now: could a request still serve it?"""
    started = time.time()  # before the state is read: anything written later is kept
    lookup = get_runtime().store.lookup(model_namespace(model=model), model.model_version, [])
    follows_versions = not model.model_version

    def is_live(header: dict[str, Any]) -> bool:
        created = header.get("t")
        if not isinstance(created, int | float) or created >= started:
            return True  # written during the walk, maybe under a newer state than the one read
        if header.get("g") != lookup.generation:
            return False
        return not follows_versions or version_tag(header.get("v"), header.get("d")) == lookup.current_version

    return is_live


# Models whose reclaim thread is running, and those purged again meanwhile (walk once more).
_reclaiming: set[int] = set()
_reclaim_again: set[int] = set()
_reclaim_lock = threading.Lock()


def _reclaim_in_background(model_id: int) -> None:
    """Start a daemon thread reclaiming ``model_id`` (one per model at a time); never raises."""
    with _reclaim_lock:
        if model_id in _reclaiming:
            _reclaim_again.add(model_id)
            return
        _reclaiming.add(model_id)
    try:
        threading.Thread(
            target=_reclaim_thread, args=(model_id,), name=f"predcache-reclaim-{model_id}", daemon=True
        ).start()
    except RuntimeError:  # no thread to be had (interpreter exiting): entries expire by TTL
        logger.exception("could not start reclaiming model %s", model_id)
        with _reclaim_lock:
            _reclaiming.discard(model_id)


def _reclaim_thread(model_id: int) -> None:
    try:
        while True:
            try:
                model = ModelEndpoint.objects.filter(pk=model_id).first()
                if model is not None:
                    freed = model_cache_reclaim(model=model)
                    logger.info("reclaimed %d purged entries of %s", freed, model.name)
            except Exception:  # a background nicety: entries still expire by TTL
                logger.exception("reclaiming purged entries of model %s failed", model_id)
            with _reclaim_lock:
                if model_id not in _reclaim_again:
                    _reclaiming.discard(model_id)
                    return
                _reclaim_again.discard(model_id)
    finally:
        connections.close_all()  # this thread's own database connections


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


@transaction.atomic
def api_key_create(*, label: str, may_administer: bool = False) -> str:
    """Create an API key and return it; only its hash is stored, so it cannot be shown again.

    Every key may predict; ``may_administer`` also lets it call the management API.
    """
    api_key, key = APIKey.objects.create_key(name=label)
    if may_administer:
        ApiKeyGrant.objects.create(api_key=api_key, may_administer=True)
    return key
