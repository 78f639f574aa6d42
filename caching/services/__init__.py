"""Writes and actions, by concern: serving predictions, models, purges, API keys.

Callers import from here; each name lives in the module of its concern.
"""

from caching.services.keys import api_key_create
from caching.services.models import CLEAR, model_upsert
from caching.services.predictions import (
    ModelNotFound,
    background_version_change_record,
    model_version_change_record,
    prediction_serve,
    served_prediction,
    vertex_prediction_serve,
)
from caching.services.purges import (
    PurgeOutcome,
    PurgeRefused,
    model_cache_purge,
    model_cache_reclaim,
    model_instances_purge,
)
from caching.services.refresh import (
    HotWarmSets,
    RefreshOutcome,
    hot_set_warm_sets_save,
    model_refresh_ahead,
)

__all__ = [
    "CLEAR",
    "HotWarmSets",
    "ModelNotFound",
    "PurgeOutcome",
    "PurgeRefused",
    "RefreshOutcome",
    "api_key_create",
    "background_version_change_record",
    "hot_set_warm_sets_save",
    "model_cache_purge",
    "model_cache_reclaim",
    "model_instances_purge",
    "model_refresh_ahead",
    "model_upsert",
    "model_version_change_record",
    "prediction_serve",
    "served_prediction",
    "vertex_prediction_serve",
]
