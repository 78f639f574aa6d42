"""Warming: instances run through the read-through path ahead of traffic, paced, recorded as warm runs.

A warm asks for its instances as a client would (same keys, same single-flight), in backend
batches of the model's warm batch size, with the RFC 9111 directive ``min-fresh``: entries
that stay fresh long enough are left alone, the missing and those close to expiry are
computed and stored. Backend calls are paced to the model's warm rate. One warm of a model
runs at a time (its job lock); every run is a :class:`WarmRun` row updated after each batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from django.conf import settings
from django.db import close_old_connections, transaction
from kombu.exceptions import OperationalError as KombuOperationalError

from caching.core.errors import PredcacheError
from caching.core.store import CacheUnavailable
from caching.models import ModelEndpoint, WarmRun, WarmRunStatus, WarmSet
from caching.services.jobs import background_task_send, model_job_lock
from caching.services.warm_loop import Progress, Warm
from caching.services.warm_runs import (
    ENDED,
    warm_run_create,
    warm_run_end,
    warm_run_fail,
    warm_run_save,
    warm_set_source,
)

logger = logging.getLogger(__name__)


class WarmBusy(PredcacheError):
    """Another warm of the model holds its lock: this run waits (queued), nothing was done."""

    code = "warm_busy"

    def __init__(self, run: WarmRun) -> None:
        super().__init__(f"another warm of {run.model.name} is running")
        self.run = run


class WarmNotQueued(PredcacheError):
    """The broker did not take the warm's task; its run is marked failed."""

    code = "warm_not_queued"


# Instances queued with `warm --async` travel inside the task's message: brokers refuse large
# ones (RabbitMQ 4 takes 16 MiB by default), and a Redis broker keeps a copy until it is done.
ASYNC_MESSAGE_MAX_BYTES = 8 * 2**20


def warm_instances_enqueue(
    *,
    model: ModelEndpoint,
    instances: list[Any],
    parameters: dict[str, Any] | None,
    requested_by: str,
    source: str,
) -> WarmRun:
    """Queue a warm of ``instances`` on a Celery worker (``predcache.warm_instances``).

    Returns its run, whose ``task_id`` names the task (empty: no worker runs background work
    here, PREDCACHE_BACKGROUND_IN_WORKERS is off, and it runs on this process's threads).
    Raises WarmNotQueued when the broker cannot be reached, or the instances are too large to
    travel in one message (a warm set, stored in the database, has no such limit).
    """
    size = len(orjson.dumps([instances, parameters]))
    if size > ASYNC_MESSAGE_MAX_BYTES:
        raise WarmNotQueued(
            f"{size / 2**20:.1f} MiB of instances is too large to queue as one message (at most "
            f"{ASYNC_MESSAGE_MAX_BYTES // 2**20} MiB): add them as a warm set (predcache warmset add) "
            "and warm that, or warm in the foreground"
        )
    run = warm_run_create(model=model, source=source, requested_by=requested_by, total=len(instances))
    return _queued(
        run,
        task="predcache.warm_instances",
        args=[model.pk, instances, parameters, requested_by, run.pk],
        here=lambda: warm_run_execute(run=run, instances=instances, parameters=parameters),
    )


def warm_set_enqueue(*, warm_set: WarmSet, requested_by: str) -> WarmRun:
    """Queue a warm of ``warm_set`` now (``predcache.warm_set``), recorded as a queued run.

    Raises WarmNotQueued when the broker cannot be reached.
    """
    run = warm_run_create(
        model=warm_set.model,
        source=warm_set_source(warm_set),
        requested_by=requested_by,
        total=warm_set.instance_count,
        warm_set=warm_set,
    )
    return _queued(
        run,
        task="predcache.warm_set",
        args=[warm_set.pk, requested_by],
        here=lambda: warm_set_warm(warm_set=warm_set, requested_by=requested_by, run=run),
    )


def _queued(run: WarmRun, *, task: str, args: list[Any], here: Callable[[], WarmRun]) -> WarmRun:
    """Send ``task`` for ``run`` (its id saved on the run first, so the task finds it)."""
    try:
        with transaction.atomic():
            task_id = background_task_send(
                task=task, args=args, fallback=lambda: _run_here(here), key=("warm-run", run.pk)
            )
            run.task_id = task_id or ""
            run.save(update_fields=["task_id"])
    except KombuOperationalError as exc:  # sent as the block commits: the broker is unreachable
        warm_run_fail(run=run, message=f"not queued: the broker is unreachable ({exc})")
        raise WarmNotQueued(f"the warm of {run.model.name} was not queued: {exc}") from exc
    return run


def warm_set_warm(
    *,
    warm_set: WarmSet,
    requested_by: str,
    task_id: str = "",
    run: WarmRun | None = None,
    lock_seconds: float | None = None,
    stop_after: float | None = None,
) -> WarmRun:
    """Warm ``warm_set`` (a scheduled or queued run); the run of ``task_id`` is found or created.

    Raises WarmBusy while another warm of the model runs.
    """
    if run is None and task_id:
        run = WarmRun.objects.filter(task_id=task_id).select_related("model").first()
    if run is None:
        run = warm_run_create(
            model=warm_set.model,
            source=warm_set_source(warm_set),
            requested_by=requested_by,
            total=warm_set.instance_count,
            warm_set=warm_set,
            task_id=task_id,
        )
    return warm_run_execute(
        run=run,
        instances=warm_set.instances,
        parameters=warm_set.parameters,
        owner=task_id,
        every_seconds=warm_set.every_seconds,
        lock_seconds=lock_seconds,
        stop_after=stop_after,
    )


def warm_run_execute(
    *,
    run: WarmRun,
    instances: Sequence[Any],
    parameters: dict[str, Any] | None,
    owner: str = "",
    every_seconds: int | None = None,
    lock_seconds: float | None = None,
    stop_after: float | None = None,
    on_progress: Progress | None = None,
) -> WarmRun:
    """Warm ``run.model`` with ``instances`` and record it in ``run``, which is returned.

    Holds the model's warm lock for ``lock_seconds`` (default PREDCACHE_TASK_TIME_LIMIT_SECONDS);
    ``owner`` (the Celery task id) lets a redelivered task take back its dead delivery's lock
    and run. Starts no batch that could end after ``stop_after`` seconds (default: the lock's).
    A run that has ended is left as it is (a delivery of a task that ran already). Raises
    WarmBusy, leaving the run queued, while another warm of the model runs.
    """
    if run.status in ENDED:
        return run
    seconds = lock_seconds or settings.PREDCACHE_TASK_TIME_LIMIT_SECONDS
    try:
        with model_job_lock(model=run.model, job="warm", seconds=seconds, owner=owner) as lock:
            if not lock:
                warm_run_save(run, message=f"waiting: another warm of {run.model.name} is running")
                raise WarmBusy(run)
            Warm(run, lock, every_seconds, stop_after or seconds, on_progress).execute(instances, parameters)
    except CacheUnavailable as exc:
        warm_run_end(run, WarmRunStatus.FAILED, f"Redis is unavailable: {exc}")
    return run


def _run_here(job: Callable[[], WarmRun]) -> None:
    """A warm on this process's background threads (no worker runs background work here)."""
    try:
        job()
    except WarmBusy as busy:  # no worker to retry it later: say so rather than leave it queued
        warm_run_fail(run=busy.run, message=f"not run: another warm of {busy.run.model.name} was running")
    finally:
        close_old_connections()
