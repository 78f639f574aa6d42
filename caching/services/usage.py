"""Measure how many entries a model has in Redis and how much memory they take (the dashboard's)."""

from __future__ import annotations

from django.conf import settings

from caching.core.usage import CacheUsage, measure_usage, save_usage
from caching.models import ModelEndpoint
from caching.runtime import get_runtime
from caching.services.jobs import model_job_lock

# Kept well past the age at which a page measures again, so the overview can show a last value.
USAGE_KEEP_SECONDS = 7 * 24 * 3600
# A measurement's lock outlives its bounded SCAN (100 calls) by far; it expires if a page dies.
USAGE_LOCK_SECONDS = 60.0


def model_usage_measure(*, model: ModelEndpoint) -> CacheUsage | None:
    """Count ``model``'s entries and sample their memory (bounded: :mod:`caching.core.usage`), and store it.

    One measurement of a model at a time (its job lock): None when another page is measuring it
    now, and the stored measurement stands. Raises CacheUnavailable.
    """
    runtime = get_runtime()
    namespace = runtime.keyspace.namespace(model.pk)
    with model_job_lock(model=model, job="usage", seconds=USAGE_LOCK_SECONDS) as lock:
        if not lock:
            return None
        usage = measure_usage(runtime.client, runtime.keyspace, namespace)
        save_usage(runtime.client, runtime.keyspace, namespace, usage, keep_seconds=USAGE_KEEP_SECONDS)
    return usage


def model_usage_due(*, usage: CacheUsage | None, now: float) -> bool:
    """Whether a page should measure again: none stored, or older than PREDCACHE_USAGE_MAX_AGE_SECONDS."""
    return usage is None or now - usage.measured_at > settings.PREDCACHE_USAGE_MAX_AGE_SECONDS
