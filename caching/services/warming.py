"""Warming: instances run through the read-through path ahead of traffic, paced, recorded as warm runs.

A warm asks for its instances as a client would (same keys, same single-flight), in backend
batches of the model's warm batch size, with the RFC 9111 directive ``min-fresh``: entries
that stay fresh long enough are left alone, the missing and those close to expiry are
computed and stored. Backend calls are paced to the model's warm rate. One warm of a model
runs at a time (its job lock); every run is a :class:`WarmRun` row updated after each batch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from caching.backends.base import BackendError, BackendMisconfigured, BackendTimeout, BackendUnavailable
from caching.core.canonical import InvalidJSON
from caching.core.pacing import Pacer
from caching.core.spec import BYPASS, CACHE, Directives
from caching.core.store import CacheUnavailable
from caching.models import CachePolicy, ModelEndpoint, WarmRun, WarmRunStatus, WarmSet
from caching.runtime import get_runtime
from caching.selectors import ServedModel, served_model_build
from caching.services.jobs import JobLock, background_task_send, model_job_lock
from caching.services.predictions import served_prediction

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
# A run whose worker is lost this many times is given up: something in it kills its worker (a
# model crashing its process, a message too large for its memory), and a redelivery would again.
MAX_ATTEMPTS = 3

Progress = Callable[[WarmRun], None]
_OWN_NUMBER = re.compile(r"^instance \d+: ")


class WarmBusy(Exception):
    """Another warm of the model holds its lock: this run waits (queued), nothing was done."""

    def __init__(self, run: WarmRun) -> None:
        super().__init__(f"another warm of {run.model.name} is running")
        self.run = run


class _Superseded(Exception):
    """Another delivery of this warm's task holds its lock and its run now: this one steps aside."""


class _Stopped(Exception):
    """The run cannot go on (the model is down, Redis is gone, time is up); says why."""


def warm_min_fresh(*, ttl_seconds: int, every_seconds: int | None = None) -> int:
    """The warm's min-fresh: how long an entry must stay fresh to be left alone.

    A fraction of the TTL (PREDCACHE_WARM_MIN_FRESH_FRACTION): entries in the last part of
    their life would expire soon after the warm, so it renews them while it is at it. A set
    warmed on an interval also renews every entry that would expire before its next run.
    Never more than the TTL (then every instance is computed again).
    """
    share = math.ceil(ttl_seconds * settings.PREDCACHE_WARM_MIN_FRESH_FRACTION)
    return min(ttl_seconds, max(share, every_seconds or 0))


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


class WarmNotQueued(Exception):
    """The broker did not take the warm's task; its run is marked failed."""


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
        source=_set_source(warm_set),
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
            source=_set_source(warm_set),
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
                _save(run, message=f"waiting: another warm of {run.model.name} is running")
                raise WarmBusy(run)
            _Warm(run, lock, every_seconds, stop_after or seconds, on_progress).execute(instances, parameters)
    except CacheUnavailable as exc:
        _end(run, WarmRunStatus.FAILED, f"Redis is unavailable: {exc}")
    return run


def warm_run_fail(*, run: WarmRun, message: str) -> WarmRun:
    """End ``run`` as failed with ``message`` (a run that gave up waiting, or that a task let go)."""
    _end(run, WarmRunStatus.FAILED, message)
    return run


class _Warm:
    """One warm of one model, from its lock to its end."""

    def __init__(
        self,
        run: WarmRun,
        lock: JobLock,
        every_seconds: int | None,
        stop_after: float,
        on_progress: Progress | None,
    ) -> None:
        self.run, self.lock, self.every_seconds = run, lock, every_seconds
        self.deadline = time.monotonic() + stop_after
        self.on_progress = on_progress or (lambda run: None)
        self.notes: list[str] = []  # what the run's message says besides its last error
        self.last_error = ""

    def execute(self, instances: Sequence[Any], parameters: dict[str, Any] | None) -> None:
        run, model = self.run, self.run.model
        if run.status == WarmRunStatus.RUNNING:  # this task's first delivery died mid-run
            self.notes.append(f"restarted: its worker was lost at {run.done} of {run.total} instances")
        run.attempts += 1
        if run.attempts > MAX_ATTEMPTS:
            _end(run, WarmRunStatus.FAILED, f"given up: its worker was lost {MAX_ATTEMPTS} times mid-run")
            return
        _supersede_lost_runs(run)
        policy = CachePolicy.objects.filter(model=model).first() or CachePolicy(model=model)
        served = served_model_build(model=model)
        run.status, run.started_at = WarmRunStatus.RUNNING, run.started_at or timezone.now()
        run.total, run.done, run.computed, run.already_cached, run.errors = len(instances), 0, 0, 0, 0
        try:
            served = self._ready(served, policy)
            distinct, duplicates = self._distinct(served, instances, parameters)
            if duplicates:
                self.notes.append(f"{duplicates} duplicate instances skipped")
            run.total = len(distinct) + run.errors
            run.done = run.errors
            _save(run, message=self.message())
            self._warm(served, policy, distinct, parameters)
        except _Stopped as exc:
            _end(run, WarmRunStatus.FAILED, f"stopped at {run.done} of {run.total} instances: {exc}")
            return
        except _Superseded as exc:
            # The run is the other delivery's now: writing it would undo that one's progress.
            logger.warning("warm run %s of %s: %s; this delivery stops", run.pk, model.name, exc)
            return
        except Exception as exc:  # the soft time limit, a database error: the row must not say running
            reason = type(exc).__name__
            if str(exc) and reason not in str(exc):
                reason = f"{reason}: {exc}"
            _end(run, WarmRunStatus.FAILED, f"stopped at {run.done} of {run.total} instances: {reason}")
            raise
        _end(run, WarmRunStatus.FINISHED, self.message())

    def message(self) -> str:
        return "; ".join([*self.notes, self.last_error] if self.last_error else self.notes)

    def _ready(self, served: ServedModel, policy: CachePolicy) -> ServedModel:
        """The model as warming uses it, or _Stopped when warming it cannot store anything."""
        if served.backend is None:
            raise _Stopped(f"{served.name} is misconfigured: {served.config_error}")
        if policy.mode != CACHE:
            raise _Stopped(f"{served.name} is not cached (mode {policy.mode}): a warm would store nothing")
        # The operator named these instances as wanted: store them at once, whatever the
        # admission rule says about instances seen for the first time.
        return dataclasses.replace(served, spec=dataclasses.replace(served.spec, admit_after=1))

    def _distinct(
        self, served: ServedModel, instances: Sequence[Any], parameters: dict[str, Any] | None
    ) -> tuple[list[tuple[int, Any]], int]:
        """(number in the set, instance) once per cache key; unkeyable instances count as errors."""
        cache = get_runtime().cache
        try:
            cache.instance_digests(served.spec, [], parameters)
        except InvalidJSON as exc:
            raise _Stopped(f"the parameters cannot be keyed: {exc}") from exc
        seen: set[str] = set()
        distinct: list[tuple[int, Any]] = []
        for number, instance in enumerate(instances, start=1):
            try:
                (digest,) = cache.instance_digests(served.spec, [instance], parameters)
            except InvalidJSON as exc:
                self._error(number, str(exc))
                continue
            if digest not in seen:
                seen.add(digest)
                distinct.append((number, instance))
        return distinct, len(instances) - len(distinct) - self.run.errors

    def _warm(
        self,
        served: ServedModel,
        policy: CachePolicy,
        distinct: list[tuple[int, Any]],
        parameters: dict[str, Any] | None,
    ) -> None:
        directives = Directives(
            min_fresh=warm_min_fresh(ttl_seconds=policy.ttl_seconds, every_seconds=self.every_seconds)
        )
        pacer = Pacer(policy.warm_rate)
        size = policy.warm_batch_size
        for start in range(0, len(distinct), size):
            self._send(served, pacer, directives, distinct[start : start + size], parameters)
            _save(self.run, message=self.message())
            self.on_progress(self.run)

    def _may_call(self, served: ServedModel, pacer: Pacer) -> None:
        """Before each backend call: wait for the pace, then make sure the call may still be made.

        In this order: the wait can be long (a batch at a low rate), and after it the time limit
        may be near or the lock gone.
        """
        pacer.wait(0)  # the share the previous call booked
        if time.monotonic() + served.spec.backend_timeout > self.deadline:
            raise _Stopped("the time limit is near; run it again to warm the rest")
        try:
            held = self.lock.still_held()
        except CacheUnavailable as exc:
            raise _Stopped(f"Redis is unavailable: {exc}") from exc
        if not held:
            raise _Superseded("the warm lock expired or was taken over")

    def _send(
        self,
        served: ServedModel,
        pacer: Pacer,
        directives: Directives,
        batch: list[tuple[int, Any]],
        parameters: dict[str, Any] | None,
    ) -> None:
        """One read-through request for ``batch``; a batch the model refuses is split to find the bad ones."""
        self._may_call(served, pacer)
        started, run = pacer.clock(), self.run
        try:
            prediction = served_prediction(
                served=served,
                instances=[instance for _, instance in batch],
                parameters=parameters,
                directives=directives,
                client_request=False,
            )
        except (BackendUnavailable, BackendTimeout, BackendMisconfigured) as exc:
            raise _Stopped(str(exc)) from exc
        except BackendError as exc:
            # A refusal (400) or a model's own failure is caused by some instance of the batch:
            # halves find it, and the others are stored. Each call books what it sent.
            pacer.book(len(batch), since=started)
            if len(batch) == 1:
                self._error(batch[0][0], str(exc))
                return
            half = len(batch) // 2
            self._send(served, pacer, directives, batch[:half], parameters)
            self._send(served, pacer, directives, batch[half:], parameters)
            return
        # The model got the misses only: they are what the pace books (the hits cost it nothing).
        pacer.book(prediction.misses, since=started)
        if prediction.cache_status == BYPASS:
            raise _Stopped("Redis is unavailable: the predictions could not be stored")
        run.done += len(batch)
        run.computed += prediction.misses
        run.already_cached += prediction.hits

    def _error(self, number: int, message: str) -> None:
        self.run.errors += 1
        self.run.done += 1
        # The message numbers the instance within the one-instance call that found it: the
        # number in the set says which it is.
        self.last_error = f"instance {number} failed: {_OWN_NUMBER.sub('', message, count=1)}"


def _supersede_lost_runs(run: WarmRun) -> None:
    """Other runs of the model still marked running are dead: this one holds the only warm lock."""
    for lost in WarmRun.objects.filter(model=run.model, status=WarmRunStatus.RUNNING).exclude(pk=run.pk):
        _end(
            lost,
            WarmRunStatus.FAILED,
            f"its worker was lost at {lost.done} of {lost.total} instances; run {run.pk} warms "
            f"{run.model.name} since",
        )


def _save(run: WarmRun, *, message: str | None = None) -> None:
    if message is not None:
        run.message = message
    run.save(update_fields=_PROGRESS_FIELDS)


def _end(run: WarmRun, status: str, message: str) -> None:
    run.status, run.finished_at = status, timezone.now()
    _save(run, message=message)
    logger.info("warm run %s of %s %s: %s", run.pk, run.model.name, status, message or "ok")
    # Scheduled warms add a row every run: keep the history an operator reads, not all of it.
    older = WarmRun.objects.filter(model_id=run.model_id).values_list("pk", flat=True)[RUNS_KEPT:]
    WarmRun.objects.filter(pk__in=list(older), status__in=ENDED).delete()


def _set_source(warm_set: WarmSet) -> str:
    return f"warm set {warm_set.name}"


def _run_here(job: Callable[[], WarmRun]) -> None:
    """A warm on this process's background threads (no worker runs background work here)."""
    try:
        job()
    except WarmBusy as busy:  # no worker to retry it later: say so rather than leave it queued
        warm_run_fail(run=busy.run, message=f"not run: another warm of {busy.run.model.name} was running")
    finally:
        close_old_connections()
