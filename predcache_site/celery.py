"""The Celery app: `celery -A predcache_site worker` runs tasks, `celery -A predcache_site beat` schedules.

Settings are Django's ``CELERY_*`` (predcache_site/settings.py); tasks live in ``caching/tasks/``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import beat_init, worker_process_shutdown, worker_ready
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "predcache_site.settings")

app = Celery("predcache_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

logger = logging.getLogger(__name__)


@app.on_after_finalize.connect
def _queue_of_this_installation(sender: Celery, **_: Any) -> None:
    """Send and consume on this installation's queue: another one sharing the broker has its own."""
    queue = settings.PREDCACHE_CELERY_QUEUE
    if not queue:
        from caching.installation import installation_id  # the database, once the apps are ready

        queue = f"predcache-{installation_id()}"
    sender.conf.task_default_queue = queue


@worker_ready.connect
@beat_init.connect
def _warn_if_the_broker_may_lose_tasks(**_: Any) -> None:
    """A broker in the cache's Redis loses queued tasks when that Redis evicts keys to make room."""
    from caching.broker_check import broker_eviction_warning

    warning = broker_eviction_warning()
    if warning:
        logger.warning(warning)


@worker_process_shutdown.connect
def _flush_and_forget_the_live_gauges_of_an_exiting_child(pid: int | None = None, **_: Any) -> None:
    """A prefork child's last counts reach Redis and /metrics (it leaves by os._exit: no atexit),
    then its breaker states leave /metrics with it (its counters stay counted)."""
    from prometheus_client import multiprocess

    from caching.runtime import flush_at_exit

    flush_at_exit()
    multiprocess.mark_process_dead(pid or os.getpid())
