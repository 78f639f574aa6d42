"""Background jobs of a model: never two of one kind at once, run by Celery workers or, without them, here."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction

from caching.models import ModelEndpoint
from caching.runtime import get_runtime
from caching.selectors import model_namespace

logger = logging.getLogger(__name__)


@contextmanager
def model_job_lock(*, model: ModelEndpoint, job: str, seconds: float) -> Iterator[bool]:
    """Hold ``model``'s lock for ``job`` around the block; yields False if another holder has it.

    The lock expires after ``seconds`` (the job's hard time limit), so a worker killed while
    holding it blocks the next run for at most that long. Raises CacheUnavailable.
    """
    store, namespace, token = get_runtime().store, model_namespace(model=model), secrets.token_hex(8)
    taken = store.job_lock(namespace, job, token, seconds)
    try:
        yield taken
    finally:
        if taken:
            store.job_unlock(namespace, job, token)


def background_task_send(*, task: str, args: list[Any], fallback: Callable[[], None], key: Any) -> str | None:
    """Run a task after the current transaction commits: on a Celery worker, or here on a thread.

    Returns the task id when a worker will run it. ``fallback`` runs on this process's background
    threads when ``PREDCACHE_BACKGROUND_IN_WORKERS`` is off (a deployment with no worker).
    """
    if not settings.PREDCACHE_BACKGROUND_IN_WORKERS:
        transaction.on_commit(lambda: get_runtime().background.submit(key, fallback))
        return None
    task_id = secrets.token_hex(16)
    transaction.on_commit(lambda: current_app.send_task(task, args=args, task_id=task_id))
    return task_id
