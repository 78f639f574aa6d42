"""Celery tasks, an interface like the views: each loads its inputs and calls one service.

Found by the app's autodiscovery (``caching.tasks``); each concern's tasks live in a module.
"""

from caching.tasks.purges import purge_model, reclaim_all, reclaim_model
from caching.tasks.refresh import refresh_ahead
from caching.tasks.warming import warm_instances, warm_set

__all__ = ["purge_model", "reclaim_all", "reclaim_model", "refresh_ahead", "warm_instances", "warm_set"]
