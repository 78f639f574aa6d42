"""Warming on workers: a warm set (scheduled, or "Warm now") and instances queued by ``warm --async``."""

from __future__ import annotations

import logging
import math
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from caching.models import ModelEndpoint, WarmRun, WarmSet
from caching.services.warming import WarmBusy, warm_run_execute, warm_run_fail, warm_set_warm

logger = logging.getLogger(__name__)

# A warm is the longest task: it may take the whole limit. Its model's warm lock lives as long.
WARM_TIME_LIMIT_SECONDS = settings.PREDCACHE_TASK_TIME_LIMIT_SECONDS
WARM_SOFT_TIME_LIMIT_SECONDS = WARM_TIME_LIMIT_SECONDS - max(1, min(60, WARM_TIME_LIMIT_SECONDS // 10))
# A warm arriving while another warm of its model runs waits for it (its instances may be computed
# by then, and are not computed twice): retries back off to this, for longer than the lock lives.
RETRY_MAX_SECONDS = 30
WARM_MAX_RETRIES = math.ceil(WARM_TIME_LIMIT_SECONDS / RETRY_MAX_SECONDS) + 5

_LIMITS: dict[str, Any] = {
    "bind": True,
    "time_limit": WARM_TIME_LIMIT_SECONDS,
    "soft_time_limit": WARM_SOFT_TIME_LIMIT_SECONDS,
    "max_retries": WARM_MAX_RETRIES,
}


@shared_task(name="predcache.warm_set", **_LIMITS)
def warm_set(self: Task, warm_set_id: int, requested_by: str = "schedule") -> str:
    """Warm one warm set of a model (its schedule, or the admin's "Warm now")."""
    found = WarmSet.objects.select_related("model").filter(pk=warm_set_id).first()
    if found is None:
        return "deleted"
    task_id = self.request.id or ""
    return _warm_or_wait(
        self,
        # A scheduled warm that finds another warm running is skipped, not queued behind it:
        # otherwise each tick of a schedule shorter than a warm would add one more waiting.
        wait=requested_by != "schedule",
        warm=lambda: warm_set_warm(
            warm_set=found,
            requested_by=requested_by,
            task_id=task_id,
            lock_seconds=WARM_TIME_LIMIT_SECONDS,
            stop_after=WARM_SOFT_TIME_LIMIT_SECONDS,
        ),
    )


@shared_task(name="predcache.warm_instances", **_LIMITS)
def warm_instances(
    self: Task,
    model_id: int,
    instances: list[Any],
    parameters: dict[str, Any] | None,
    requested_by: str,
    run_id: int,
) -> str:
    """Warm a model with instances sent along (``predcache warm --async``), recorded in run ``run_id``."""
    run = WarmRun.objects.select_related("model").filter(pk=run_id, model_id=model_id).first()
    if run is None or not ModelEndpoint.objects.filter(pk=model_id).exists():
        return "deleted"
    return _warm_or_wait(
        self,
        wait=True,
        warm=lambda: warm_run_execute(
            run=run,
            instances=instances,
            parameters=parameters,
            owner=self.request.id or "",
            lock_seconds=WARM_TIME_LIMIT_SECONDS,
            stop_after=WARM_SOFT_TIME_LIMIT_SECONDS,
        ),
    )


def _warm_or_wait(task: Task, *, warm: Any, wait: bool) -> str:
    """Run ``warm``; while another warm of the model runs, retry later (backing off, up to a bound),
    or with ``wait`` off, give up at once (the run says why)."""
    try:
        run: WarmRun = warm()
    except WarmBusy as busy:
        if not wait:
            warm_run_fail(run=busy.run, message="skipped: another warm of the model was running")
            return "skipped"
        retries = task.request.retries
        if retries >= WARM_MAX_RETRIES:
            warm_run_fail(run=busy.run, message="gave up waiting for another warm of the model to end")
            return "gave up"
        raise task.retry(countdown=min(RETRY_MAX_SECONDS, 2**retries)) from None
    except SoftTimeLimitExceeded:
        logger.warning("a warm reached its time limit (%s s)", WARM_SOFT_TIME_LIMIT_SECONDS)
        return "time limit"
    return f"{run.status}: {run.done} of {run.total}"
