"""Purging a model's cached predictions (whole, one version, or some instances) and reclaiming memory."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from caching.core.errors import PredcacheError
from caching.core.freshness import ServedState, header_servable
from caching.models import ModelEndpoint, PurgeRecord, PurgeScope
from caching.runtime import get_runtime
from caching.selectors import model_namespace, served_model_get
from caching.services.jobs import background_task_send
from caching.services.predictions import ModelNotFound

logger = logging.getLogger(__name__)


class PurgeRefused(PredcacheError):
    """A purge that would not make anything unreachable; nothing was changed."""

    code = "version_not_served"


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
    Celery task (or, with no workers, a background thread) frees the purged entries' memory
    once the transaction commits.
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
        _reclaim_in_background(model.pk)
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
        raise ModelNotFound.named(model.name)
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
    state = ServedState(lookup.generation, lookup.current_version)

    def is_live(header: dict[str, Any]) -> bool:
        created = header.get("t")
        if not isinstance(created, int | float) or created >= started:
            return True  # written during the walk, maybe under a newer state than the one read
        return header_servable(header, pin=model.model_version, state=state)

    return is_live


def _reclaim_in_background(model_id: int) -> None:
    """Reclaim ``model_id``'s unreachable entries once the purge commits: on a worker, or on a thread."""

    def reclaim_here() -> None:
        try:
            model_reclaim_by_id(model_id=model_id)
        except Exception:  # a background nicety: entries still expire by TTL
            logger.exception("reclaiming purged entries of model %s failed", model_id)
        finally:
            close_old_connections()  # this thread's own database connection

    background_task_send(
        task="predcache.reclaim_model",
        args=[model_id],
        fallback=reclaim_here,
        key=("reclaim", model_id),
        best_effort=True,  # the purge has happened; the daily reclaim frees what this one does not
    )


def model_reclaim_by_id(*, model_id: int) -> int:
    """Reclaim a model named by its id (as tasks carry it); 0 if it was deleted meanwhile."""
    model = ModelEndpoint.objects.filter(pk=model_id).first()
    if model is None:
        return 0
    freed = model_cache_reclaim(model=model)
    logger.info("reclaimed %d purged entries of %s", freed, model.name)
    return freed


def _version_names(tag: str) -> set[str]:
    """The names an operator may use for a version tag: the tag, its deployed model, its version."""
    deployed, _, version = tag.partition("/")
    return {tag, deployed, version} - {""} if tag else {""}
