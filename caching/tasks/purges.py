"""Scheduled purges and the reclaim of purged entries' memory."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from caching.core.store import CacheUnavailable
from caching.models import ModelEndpoint
from caching.services.jobs import model_job_lock
from caching.services.purges import model_cache_purge, model_reclaim_by_id

logger = logging.getLogger(__name__)

# Purges and reclaims are short: a SCAN of one model's keys at the most.
PURGE_TIME_LIMIT_SECONDS = 600


@shared_task(
    name="predcache.purge_model",
    time_limit=PURGE_TIME_LIMIT_SECONDS,
    soft_time_limit=PURGE_TIME_LIMIT_SECONDS - 30,
    # Redis unreachable: the purge did not happen, and a schedule's purge must not be lost.
    autoretry_for=(CacheUnavailable,),
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=20,
)
def purge_model(model_id: int, requested_by: str = "schedule") -> str:
    """Purge every cached prediction of a model (its purge schedule), then free their memory.

    The purge itself is one atomic generation swap and needs no lock: two at once are two
    purges. Freeing the memory takes the model's reclaim lock, as the reclaim task does.
    """
    model = ModelEndpoint.objects.filter(pk=model_id).first()
    if model is None:
        return "deleted"
    outcome = model_cache_purge(model=model, requested_by=requested_by, reclaim=False)
    if settings.PREDCACHE_RECLAIM_AFTER_PURGE:
        reclaim_model(model_id)
    return outcome.message


@shared_task(
    name="predcache.reclaim_model",
    time_limit=PURGE_TIME_LIMIT_SECONDS,
    soft_time_limit=PURGE_TIME_LIMIT_SECONDS - 30,
)
def reclaim_model(model_id: int) -> int:
    """Free the memory of a model's entries that can no longer be served; returns how many."""
    model = ModelEndpoint.objects.filter(pk=model_id).first()
    if model is None:
        return 0
    with model_job_lock(model=model, job="reclaim", seconds=PURGE_TIME_LIMIT_SECONDS) as mine:
        if not mine:
            return 0  # another reclaim walks the same keys right now
        return model_reclaim_by_id(model_id=model_id)


@shared_task(name="predcache.reclaim_all", time_limit=PURGE_TIME_LIMIT_SECONDS * 4)
def reclaim_all() -> int:
    """Reclaim every model in turn (the daily catch-all); returns the entries freed."""
    freed = 0
    for model_id in ModelEndpoint.objects.values_list("pk", flat=True):
        freed += reclaim_model(model_id)
    return freed
