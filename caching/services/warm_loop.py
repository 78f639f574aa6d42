"""One warm of one model, from its lock to its end: distinct instances, batches, pacing, errors."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.utils import timezone

from caching.backends.base import BackendError, BackendMisconfigured, BackendTimeout, BackendUnavailable
from caching.core.canonical import InvalidJSON
from caching.core.pacing import Pacer
from caching.core.spec import BYPASS, CACHE, Directives
from caching.core.store import CacheUnavailable
from caching.models import CachePolicy, WarmRun, WarmRunStatus
from caching.runtime import get_runtime
from caching.selectors import ServedModel, served_model_build
from caching.services.jobs import JobLock
from caching.services.predictions import served_prediction
from caching.services.warm_runs import warm_run_end, warm_run_save, warm_runs_supersede_lost

logger = logging.getLogger(__name__)

Progress = Callable[[WarmRun], None]
# A run whose worker is lost this many times is given up: something in it kills its worker (a
# model crashing its process, a message too large for its memory), and a redelivery would again.
MAX_ATTEMPTS = 3

_OWN_NUMBER = re.compile(r"^instance \d+: ")


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


class Warm:
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
            warm_run_end(
                run, WarmRunStatus.FAILED, f"given up: its worker was lost {MAX_ATTEMPTS} times mid-run"
            )
            return
        warm_runs_supersede_lost(run)
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
            warm_run_save(run, message=self.message())
            self._warm(served, policy, distinct, parameters)
        except _Stopped as exc:
            warm_run_end(run, WarmRunStatus.FAILED, f"stopped at {run.done} of {run.total} instances: {exc}")
            return
        except _Superseded as exc:
            # The run is the other delivery's now: writing it would undo that one's progress.
            logger.warning("warm run %s of %s: %s; this delivery stops", run.pk, model.name, exc)
            return
        except Exception as exc:  # the soft time limit, a database error: the row must not say running
            reason = type(exc).__name__
            if str(exc) and reason not in str(exc):
                reason = f"{reason}: {exc}"
            warm_run_end(
                run, WarmRunStatus.FAILED, f"stopped at {run.done} of {run.total} instances: {reason}"
            )
            raise
        warm_run_end(run, WarmRunStatus.FINISHED, self.message())

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
            warm_run_save(self.run, message=self.message())
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
