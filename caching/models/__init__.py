"""Registered models, their cache policies, warm sets and the records of what was done to them.

Each concern lives in a module; everything is importable from here, as the migrations and the
rest of the code do.
"""

from caching.models.endpoints import MODEL_NAME_PATTERN, ModelEndpoint
from caching.models.policies import (
    CacheMode,
    CachePolicy,
    Compression,
    validate_cron,
    validate_field_names,
)
from caching.models.records import (
    ApiKeyGrant,
    Installation,
    ModelVersionChange,
    PurgeRecord,
    PurgeScope,
    new_installation_id,
)
from caching.models.warming import WarmRun, WarmRunStatus, WarmSet, validate_every_seconds

__all__ = [
    "MODEL_NAME_PATTERN",
    "ApiKeyGrant",
    "CacheMode",
    "CachePolicy",
    "Compression",
    "Installation",
    "ModelEndpoint",
    "ModelVersionChange",
    "PurgeRecord",
    "PurgeScope",
    "WarmRun",
    "WarmRunStatus",
    "WarmSet",
    "new_installation_id",
    "validate_cron",
    "validate_every_seconds",
    "validate_field_names",
]
