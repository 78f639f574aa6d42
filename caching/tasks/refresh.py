"""Refresh-ahead sweeps: a model's hot entries recomputed shortly before they expire."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from caching.models import ModelEndpoint
from caching.services import model_refresh_ahead
from caching.services.jobs import model_job_lock

logger = logging.getLogger(__name__)

# One sweep recomputes at most a hot set (PREDCACHE_HOT_SET_SIZE entries) at the warm rate; it
# stops starting batches a minute before the limit, and the lock expires with the limit.
REFRESH_TIME_LIMIT_SECONDS = 600


@shared_task(
    name="predcache.refresh_ahead",
    time_limit=REFRESH_TIME_LIMIT_SECONDS,
    soft_time_limit=REFRESH_TIME_LIMIT_SECONDS - 30,
)
def refresh_ahead(model_id: int) -> dict[str, Any]:
    """Recompute the hot entries of a model that expire within its refresh-ahead window."""
    model = ModelEndpoint.objects.select_related("policy").filter(pk=model_id).first()
    if model is None:
        return {"message": "deleted"}
    # The warm lock: a sweep and a warm of one model never run together, so the model's warm
    # rate bounds both (and a warm renews the hot entries anyway).
    with model_job_lock(model=model, job="warm", seconds=REFRESH_TIME_LIMIT_SECONDS) as mine:
        if not mine:
            logger.info("a warm or sweep of %s is running; this refresh-ahead sweep is skipped", model.name)
            return {"message": "skipped"}
        outcome = model_refresh_ahead(model=model, budget_seconds=REFRESH_TIME_LIMIT_SECONDS - 60)
    logger.info("%s", outcome.message)
    return outcome.as_dict()
