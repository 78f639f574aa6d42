"""Stale-while-revalidate: stale entries are served at once and refreshed on a background thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)


class BackgroundRefresher:
    """Runs refreshes on two threads, at most ``backlog`` running or queued.

    A refresh that finds the backlog full is not queued: its entries stay stale for now and the
    next request that serves one starts it again (a slow model must not pile work up).
    """

    def __init__(self, *, workers: int = 2, backlog: int = 16) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="predcache-refresh")
        self._slots = threading.BoundedSemaphore(backlog)

    def submit(self, refresh: Callable[[], None], *, name: str) -> bool:
        """Queue ``refresh``; False (nothing queued) when the backlog is full or shut down."""
        if not self._slots.acquire(blocking=False):
            return False

        def run() -> None:
            try:
                refresh()
            except Exception:  # a background refresh must never take the process down
                logger.exception("background refresh of %s failed", name)
            finally:
                self._slots.release()

        try:
            self._executor.submit(run)
        except RuntimeError:  # shut down
            self._slots.release()
            return False
        return True

    def shutdown(self) -> None:
        """Stop (queued refreshes are dropped: entries just stay stale)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
