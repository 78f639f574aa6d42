"""The record of each warm: a WarmRun row created queued, updated each batch, ended once."""

from __future__ import annotations

import logging

from django.utils import timezone

from caching.models import ModelEndpoint, WarmRun, WarmRunStatus, WarmSet
from caching.runtime import get_runtime

logger = logging.getLogger(__name__)

ENDED = (WarmRunStatus.FINISHED, WarmRunStatus.FAILED)
RUNS_KEPT = 100  # per model, the newest; older ended runs are deleted as new ones end
_PROGRESS_FIELDS = [
    "status",
    "started_at",
    "finished_at",
    "total",
    "done",
    "computed",
    "already_cached",
    "errors",
    "attempts",
    "message",
]


def warm_run_create(
    *,
    model: ModelEndpoint,
    source: str,
    requested_by: str,
    total: int = 0,
    warm_set: WarmSet | None = None,
    task_id: str = "",
) -> WarmRun:
    """Record a warm about to be queued or run (status queued)."""
    return WarmRun.objects.create(
        model=model,
        warm_set=warm_set,
        source=source[: WarmRun._meta.get_field("source").max_length],
        requested_by=requested_by[: WarmRun._meta.get_field("requested_by").max_length],
        task_id=task_id,
        total=total,
    )


def warm_run_fail(*, run: WarmRun, message: str) -> WarmRun:
    """End ``run`` as failed with ``message`` (a run that gave up waiting, or that a task let go)."""
    warm_run_end(run, WarmRunStatus.FAILED, message)
    return run


def warm_runs_supersede_lost(run: WarmRun) -> None:
    """Other runs of the model still marked running are dead: this one holds the only warm lock."""
    for lost in WarmRun.objects.filter(model=run.model, status=WarmRunStatus.RUNNING).exclude(pk=run.pk):
        warm_run_end(
            lost,
            WarmRunStatus.FAILED,
            f"its worker was lost at {lost.done} of {lost.total} instances; run {run.pk} warms "
            f"{run.model.name} since",
        )


def warm_run_save(run: WarmRun, *, message: str | None = None) -> None:
    if message is not None:
        run.message = message
    run.save(update_fields=_PROGRESS_FIELDS)


def warm_run_end(run: WarmRun, status: str, message: str) -> None:
    run.status, run.finished_at = status, timezone.now()
    warm_run_save(run, message=message)
    logger.info("warm run %s of %s %s: %s", run.pk, run.model.name, status, message or "ok")
    get_runtime().stats.record_warm_run(model_name=run.model.name, status=status, warmed=run.computed)
    # Scheduled warms add a row every run: keep the history an operator reads, not all of it.
    older = WarmRun.objects.filter(model_id=run.model_id).values_list("pk", flat=True)[RUNS_KEPT:]
    WarmRun.objects.filter(pk__in=list(older), status__in=ENDED).delete()


def warm_set_source(warm_set: WarmSet) -> str:
    return f"warm set {warm_set.name}"
