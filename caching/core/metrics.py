"""The Prometheus metrics predcache exports: names, help, labels, buckets.

prometheus-client picks where values live when it is imported: with ``PROMETHEUS_MULTIPROC_DIR``
set (the settings set it first), each process writes its own file there and /metrics adds up all
the gunicorn and Celery workers of a host. :mod:`caching.core.metrics_recorder` feeds them.

Labels are bounded: ``model`` is a registered model's name (see the recorder), the others take
values from fixed sets (``result``, ``cache``, ``code``: the error codes of
:mod:`caching.core.errors`, ``status``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from caching.core.breaker import CLOSED, HALF_OPEN, OPEN
from caching.core.spec import HIT, MISS, PARTIAL, STALE

STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# registry=None: in multiprocess mode /metrics reads the files, not a registry of this process.
REQUESTS = Counter("predcache_requests", "Client predict requests.", ["model"], registry=None)
INSTANCES = Counter(
    "predcache_instances",
    "Instances of client requests by how they were answered: hit (fresh from the cache), "
    "miss (computed), stale (a stale entry), bypass (the cache was not used).",
    ["model", "result"],
    registry=None,
)
L1_HITS = Counter(
    "predcache_l1_hits",
    "Of the hit instances, those the in-process tier (L1) answered with no Redis command.",
    ["model"],
    registry=None,
)
REQUEST_SECONDS = Histogram(
    "predcache_request_seconds",
    "Time the read-through took answering a client request, by its X-Cache status "
    "(bypassed requests are not timed).",
    ["model", "cache"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)
BACKEND_CALLS = Counter("predcache_backend_calls", "Calls made to the model.", ["model"], registry=None)
BACKEND_ERRORS = Counter(
    "predcache_backend_errors",
    "Failed model calls by error code, and calls the model's circuit breaker refused (circuit_open).",
    ["model", "code"],
    registry=None,
)
BACKEND_SECONDS = Histogram(
    "predcache_backend_seconds",
    "Duration of model calls, failed ones included.",
    ["model"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)
SECONDS_SAVED = Counter(
    "predcache_backend_seconds_saved",
    "Estimated model time the hits saved: each hit priced at what an answered instance costs the "
    "model on average in this process.",
    ["model"],
    registry=None,
)
SINGLE_FLIGHT_WAITS = Counter(
    "predcache_singleflight_waits",
    "Instances a request waited for while another request computed them.",
    ["model"],
    registry=None,
)
INTEGRITY_FAILURES = Counter(
    "predcache_integrity_failures",
    "Cached values whose HMAC tag did not verify (forged, copied from another entry, or written "
    "without the key): treated as misses.",
    ["model"],
    registry=None,
)
REDIS_ERRORS = Counter(
    "predcache_redis_errors",
    "Redis calls of the cache that failed (the Redis breaker's failures).",
    registry=None,
)
REDIS_BREAKER = Gauge(
    "predcache_redis_breaker_state",
    "The Redis circuit breaker, the worst of the live processes: 0 closed, 1 half-open, 2 open.",
    multiprocess_mode="livemax",
    registry=None,
)
BACKEND_BREAKER = Gauge(
    "predcache_backend_breaker_state",
    "A model's circuit breaker, the worst of the live processes: 0 closed, 1 half-open, 2 open.",
    ["model"],
    multiprocess_mode="livemax",
    registry=None,
)
WARM_RUNS = Counter(
    "predcache_warm_runs",
    "Warm runs ended, by status (finished, failed).",
    ["model", "status"],
    registry=None,
)
WARMED = Counter(
    "predcache_warmed_instances", "Instances warm runs computed and stored.", ["model"], registry=None
)
WARM_STATUSES = ("finished", "failed")
RESULTS = ("hit", "miss", "stale", "bypass")
CACHE_STATUSES = (HIT, MISS, PARTIAL, STALE)
