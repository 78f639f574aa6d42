"""Background jobs of a model: never two of one kind at once, run by Celery workers or, without them, here."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction

from caching.models import ModelEndpoint
from caching.runtime import get_runtime
from caching.selectors import model_namespace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobLock:
    """A model's job lock as one holder sees it: false when another holder had it."""

    taken: bool
    namespace: str
    job: str
    token: str

    def __bool__(self) -> bool:
        return self.taken

    def still_held(self) -> bool:
        """Whether this holder still has the lock (not expired, not taken over); raises CacheUnavailable."""
        return self.taken and get_runtime().store.job_lock_held(self.namespace, self.job, self.token)


@contextmanager
def model_job_lock(*, model: ModelEndpoint, job: str, seconds: float, owner: str = "") -> Iterator[JobLock]:
    """Hold ``model``'s lock for ``job`` around the block; yields a false lock if another holder has it.

    The lock expires after ``seconds`` (the job's hard time limit), so a worker killed while
    holding it blocks the next run for at most that long. An ``owner`` (a Celery task id) takes
    back a lock held under its own name: the broker delivers a task again only once its first
    delivery is dead. Raises CacheUnavailable.
    """
    store, namespace = get_runtime().store, model_namespace(model=model)
    token = f"{owner}:{secrets.token_hex(8)}" if owner else secrets.token_hex(8)
    taken = store.job_lock(namespace, job, token, seconds, take_over=f"{owner}:" if owner else "")
    try:
        yield JobLock(taken, namespace, job, token)
    finally:
        if taken:
            store.job_unlock(namespace, job, token)


def background_task_send(
    *, task: str, args: list[Any], fallback: Callable[[], None], key: Any, best_effort: bool = False
) -> str | None:
    """Run a task after the current transaction commits: on a Celery worker, or here on a thread.

    Returns the task id when a worker will run it. ``fallback`` runs on this process's background
    threads when ``PREDCACHE_BACKGROUND_IN_WORKERS`` is off (a deployment with no worker). With
    ``best_effort``, a broker that cannot be reached is logged, not raised: the work is a
    nicety that a later run makes up for (a reclaim), and what it follows has happened already.
    """
    if not settings.PREDCACHE_BACKGROUND_IN_WORKERS:
        transaction.on_commit(lambda: get_runtime().background.submit(key, fallback))
        return None
    task_id = secrets.token_hex(16)

    def send() -> None:
        try:
            _send(task, args, task_id)
        except Exception as exc:  # kombu's, the transport's: any of them means "not queued"
            if not best_effort:
                raise
            logger.warning("could not queue %s%s (%s); a later run will do its work", task, args, exc)

    transaction.on_commit(send)
    return task_id


def _send(task: str, args: list[Any], task_id: str) -> None:
    # Finalizing the app sets this installation's queue (predcache_site/celery.py); a process that
    # only sends tasks by name (web, CLI) would otherwise send them to Celery's default queue,
    # which no worker of this installation consumes.
    current_app.finalize()
    current_app.send_task(task, args=args, task_id=task_id)
