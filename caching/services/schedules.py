"""Periodic tasks in the database (django-celery-beat), kept in step with policies and warm sets.

Each model's purge cron, refresh-ahead sweep and each warm set's schedule is one ``PeriodicTask``
named ``predcache:<what>:<id>``; beat's DatabaseScheduler notices every change without a restart.
Rows are written one by one, so django-celery-beat's signals mark the change; code that writes
in bulk calls :func:`schedules_changed`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask, PeriodicTasks

from caching.models import CachePolicy, ModelEndpoint, WarmSet

logger = logging.getLogger(__name__)

PREFIX = "predcache:"
# How often the refresh-ahead sweep of a model runs, as a fraction of its window: entries about
# to expire are found a few times before they do, and the sweep never runs more than needed.
REFRESH_SWEEPS_PER_WINDOW = 4
SHORTEST_PERIOD_SECONDS = 10
# Installed by `predcache schedules install`: work for every model, not for one.
DAILY_RECLAIM = f"{PREFIX}reclaim:all"


@dataclass(frozen=True, slots=True)
class Schedule:
    """What one periodic task should be: its task, its arguments, and when."""

    name: str
    task: str
    args: list[int]
    description: str
    every_seconds: int | None = None
    cron: str = ""


def purge_task_name(model_id: int) -> str:
    return f"{PREFIX}purge:m{model_id}"


def refresh_task_name(model_id: int) -> str:
    return f"{PREFIX}refresh-ahead:m{model_id}"


def warm_task_name(warm_set_id: int) -> str:
    return f"{PREFIX}warm:s{warm_set_id}"


def model_schedules(*, model: ModelEndpoint, policy: CachePolicy) -> dict[str, Schedule | None]:
    """A model's own periodic tasks, by name: the schedule each should have, or None (none)."""
    refresh_every = None
    if policy.refresh_ahead_seconds:
        refresh_every = max(
            SHORTEST_PERIOD_SECONDS, policy.refresh_ahead_seconds // REFRESH_SWEEPS_PER_WINDOW
        )
    return {
        purge_task_name(model.pk): Schedule(
            purge_task_name(model.pk),
            "predcache.purge_model",
            [model.pk],
            f"Purge every cached prediction of {model.name} (its policy's purge schedule)",
            cron=policy.purge_schedule,
        )
        if policy.purge_schedule
        else None,
        refresh_task_name(model.pk): Schedule(
            refresh_task_name(model.pk),
            "predcache.refresh_ahead",
            [model.pk],
            f"Recompute hot entries of {model.name} about to expire (refresh ahead "
            f"{policy.refresh_ahead_seconds} s)",
            every_seconds=refresh_every,
        )
        if refresh_every
        else None,
    }


def warm_set_schedule(*, warm_set: WarmSet) -> Schedule | None:
    """The periodic task a warm set should have, or None when it is warmed on demand only."""
    if not (warm_set.every_seconds or warm_set.cron):
        return None
    return Schedule(
        warm_task_name(warm_set.pk),
        "predcache.warm_set",
        [warm_set.pk],
        f"Warm {warm_set.model.name}/{warm_set.name} ({warm_set.instance_count} instances)",
        every_seconds=warm_set.every_seconds,
        cron=warm_set.cron,
    )


@transaction.atomic
def model_schedules_sync(*, model: ModelEndpoint) -> None:
    """Make the model's purge and refresh-ahead periodic tasks match its policy (create, update, delete)."""
    policy = CachePolicy.objects.filter(model=model).first() or CachePolicy(model=model)
    for name, schedule in model_schedules(model=model, policy=policy).items():
        _apply(name, schedule)


@transaction.atomic
def warm_set_schedule_sync(*, warm_set: WarmSet) -> None:
    """Make the warm set's periodic task match its schedule."""
    _apply(warm_task_name(warm_set.pk), warm_set_schedule(warm_set=warm_set))


def schedules_forget_model(*, model_id: int) -> None:
    """Delete a deleted model's periodic tasks (its warm sets' go with their own rows)."""
    for name in (purge_task_name(model_id), refresh_task_name(model_id)):
        _apply(name, None)


def schedules_forget_warm_set(*, warm_set_id: int) -> None:
    _apply(warm_task_name(warm_set_id), None)


@transaction.atomic
def schedules_install() -> list[str]:
    """Every schedule predcache keeps, made to match the database now; idempotent. Says what changed."""
    changes: list[str] = []
    wanted: dict[str, Schedule | None] = {
        DAILY_RECLAIM: Schedule(
            DAILY_RECLAIM,
            "predcache.reclaim_all",
            [],
            "Free the memory of purged entries of every model (after each purge it is done at once; "
            "this catches the ones that were not)",
            cron="17 4 * * *",
        )
    }
    for model in ModelEndpoint.objects.select_related("policy"):
        policy = getattr(model, "policy", None) or CachePolicy(model=model)
        wanted.update(model_schedules(model=model, policy=policy))
    for warm_set in WarmSet.objects.select_related("model"):
        wanted[warm_task_name(warm_set.pk)] = warm_set_schedule(warm_set=warm_set)
    for name, schedule in sorted(wanted.items()):
        change = _apply(name, schedule)
        if change:
            changes.append(f"{change} {name}")
    for name in (
        PeriodicTask.objects.filter(name__startswith=PREFIX)
        .exclude(name__in=list(wanted))
        .values_list("name", flat=True)
    ):
        _apply(name, None)
        changes.append(f"deleted {name} (nothing it served exists any more)")
    return changes


def schedules_changed() -> None:
    """Tell a running beat to reload its schedule after writes that bypassed model signals."""
    PeriodicTasks.update_changed()


def _apply(name: str, schedule: Schedule | None) -> str:
    """Create, update or delete the periodic task ``name``; returns what it did ("" if nothing)."""
    existing = PeriodicTask.objects.filter(name=name).first()
    if schedule is None:
        if existing is None:
            return ""
        existing.delete()  # one row: django-celery-beat's signals tell beat
        return "deleted"
    interval, crontab = _when(schedule)
    fields = {
        "task": schedule.task,
        "args": json.dumps(schedule.args),
        "kwargs": "{}",
        "interval": interval,
        "crontab": crontab,
        "description": schedule.description,
        "enabled": True,
    }
    if existing is None:
        PeriodicTask.objects.create(name=name, **fields)
        return "created"
    if all(getattr(existing, field) == value for field, value in fields.items()):
        return ""
    for field, value in fields.items():
        setattr(existing, field, value)
    existing.save()
    return "updated"


def _when(schedule: Schedule) -> tuple[IntervalSchedule | None, CrontabSchedule | None]:
    if schedule.every_seconds:
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=schedule.every_seconds, period=IntervalSchedule.SECONDS
        )
        return interval, None
    minute, hour, day_of_month, month_of_year, day_of_week = schedule.cron.split()
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
        timezone="UTC",
    )
    return None, crontab
