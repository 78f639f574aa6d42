"""Writes and actions, by concern: serving predictions, models, purges, API keys.

Callers import from here; each name lives in the module of its concern.
"""

from caching.services.keys import (
    ApiKeyNotFound,
    api_key_create,
    api_key_last_used_record,
    api_key_revoke,
    api_key_used,
)
from caching.services.models import CLEAR, model_upsert
from caching.services.predictions import (
    ModelNotFound,
    background_version_change_record,
    model_version_change_record,
    prediction_admit,
    prediction_serve,
    served_prediction,
    vertex_model_for_key,
    vertex_prediction_admit,
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
    "ApiKeyNotFound",
    "HotWarmSets",
    "ModelNotFound",
    "PurgeOutcome",
    "PurgeRefused",
    "RefreshOutcome",
    "api_key_create",
    "api_key_last_used_record",
    "api_key_revoke",
    "api_key_used",
    "background_version_change_record",
    "hot_set_warm_sets_save",
    "model_cache_purge",
    "model_cache_reclaim",
    "model_instances_purge",
    "model_refresh_ahead",
    "model_upsert",
    "model_version_change_record",
    "prediction_admit",
    "prediction_serve",
    "served_prediction",
    "vertex_model_for_key",
    "vertex_prediction_admit",
]
