"""Reads for the admin's dashboard: per-minute series, per-model figures and recent events.

Every Redis read of a page is queued on one pipeline (one round trip on a single node, one per
node on a cluster), and the database queries do not grow with the number of models.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, cast

from django.conf import settings
from django.db.models import OuterRef, Subquery

from caching.core.breaker_report import ReportedBreaker, fresh_seconds, parse_breakers
from caching.core.stats import STAT_FIELDS
from caching.core.store import REDIS_FAILURES, CacheUnavailable
from caching.core.timeline import minute_of, parse_minutes, queue_minutes_read
from caching.core.usage import CacheUsage, parse_usage
from caching.models import ModelEndpoint, ModelVersionChange, PurgeRecord, WarmRun
from caching.runtime import get_runtime

WINDOW_HOURS = (1, 6, 24)  # the windows a page offers, those within the retention
RECENT_EVENTS = 10  # purges, warm runs and version changes listed


@dataclass(frozen=True, slots=True)
class ModelFigures:
    """What the dashboard shows of one model: lifetime counters, measured usage, reported breakers."""

    name: str
    model_id: int
    counters: dict[str, int]
    usage: CacheUsage | None
    breakers: list[ReportedBreaker]
    followed_version: str | None = None

    @property
    def hit_ratio(self) -> float | None:
        looked_up = self.counters["hits"] + self.counters["misses"]
        return self.counters["hits"] / looked_up if looked_up else None

    @property
    def backend_ms_per_instance(self) -> float | None:
        answered = self.counters["backend_answered"]
        return self.counters["backend_us"] / 1000 / answered if answered else None

    @property
    def seconds_saved(self) -> float | None:
        """Hits times the model's measured backend time per answered instance (an estimate)."""
        per_instance = self.backend_ms_per_instance
        return None if per_instance is None else self.counters["hits"] * per_instance / 1000


@dataclass(frozen=True, slots=True)
class Window:
    """The minutes a page charts: the last ``hours`` hours up to the current minute."""

    hours: int
    minutes: list[int] = field(default_factory=list)

    @classmethod
    def last(cls, hours: int, *, now: float | None = None) -> Window:
        current = minute_of(time.time() if now is None else now)
        return cls(hours, list(range(current - hours * 60 + 1, current + 1)))


def window_hours_offered() -> list[int]:
    """The windows within the retention of per-minute counters (at least the shortest)."""
    kept = settings.PREDCACHE_DASHBOARD_RETENTION_HOURS
    return [hours for hours in WINDOW_HOURS if hours <= kept] or [WINDOW_HOURS[0]]


def series(
    minutes: list[int], counts: list[dict[str, int]], *, ms_per_instance: float | None
) -> dict[str, Any]:
    """Chart data (JSON values) from the counters of each minute; None where a ratio has no traffic."""

    def per_request_ms(total_us: int, requests: int) -> float | None:
        return round(total_us / requests / 1000, 3) if requests else None

    return {
        "labels": [time.strftime("%H:%M", time.gmtime(minute * 60)) for minute in minutes],
        "requests": [count["requests"] for count in counts],
        "hits": [count["hits"] for count in counts],
        "l1_hits": [count["l1_hits"] for count in counts],
        "misses": [count["misses"] for count in counts],
        "hit_ratio": [
            round(count["hits"] / (count["hits"] + count["misses"]), 4)
            if count["hits"] + count["misses"]
            else None
            for count in counts
        ],
        "backend_calls": [count["backend_calls"] for count in counts],
        "seconds_saved": None
        if ms_per_instance is None
        else [round(count["hits"] * ms_per_instance / 1000, 6) for count in counts],
        "hit_ms": [per_request_ms(count["cached_us"], count["cached_requests"]) for count in counts],
        "miss_ms": [per_request_ms(count["computed_us"], count["computed_requests"]) for count in counts],
    }


def _pipeline(client: Any) -> Any:
    try:
        return client.pipeline(transaction=False)  # on a cluster, its client may be built now
    except REDIS_FAILURES as exc:
        raise CacheUnavailable(str(exc)) from exc


def _execute(pipe: Any) -> list[Any]:
    try:
        return cast(list[Any], pipe.execute())
    except REDIS_FAILURES as exc:
        raise CacheUnavailable(str(exc)) from exc


def _figures(model: Any, replies: list[Any], now: float, version: str | None = None) -> ModelFigures:
    stats, usage, breakers = replies
    return ModelFigures(
        name=model.name,
        model_id=model.pk,
        counters={name: int(value or 0) for name, value in zip(STAT_FIELDS, stats, strict=True)},
        usage=parse_usage(usage),
        breakers=parse_breakers(
            breakers, now=now, fresh_for=fresh_seconds(settings.PREDCACHE_STATS_FLUSH_SECONDS)
        ),
        followed_version=version,
    )


def _queue_figures(pipe: Any, namespace: str) -> None:
    keyspace = get_runtime().keyspace
    pipe.hmget(keyspace.stats(namespace), STAT_FIELDS)
    pipe.hgetall(keyspace.usage(namespace))
    pipe.hgetall(keyspace.breakers(namespace))


def dashboard_overview(*, window: Window) -> dict[str, Any]:
    """Every model's figures, the all-models series over ``window``, recent events.

    Raises CacheUnavailable.
    """
    runtime = get_runtime()
    keyspace, now = runtime.keyspace, time.time()
    latest = ModelVersionChange.objects.filter(model=OuterRef("pk")).order_by("-observed_at", "-id")
    models = list(
        ModelEndpoint.objects.only("id", "name").annotate(followed=Subquery(latest.values("version")[:1]))
    )
    pipe = _pipeline(runtime.client)
    queued = queue_minutes_read(pipe, keyspace, keyspace.all_models(), window.minutes)
    pipe.hgetall(keyspace.breakers(keyspace.all_models()))
    for model in models:
        _queue_figures(pipe, keyspace.namespace(model.pk))
    replies = _execute(pipe)
    minutes, redis_breakers, per_model = replies[:queued], replies[queued], replies[queued + 1 :]
    figures = [
        _figures(model, per_model[3 * index : 3 * index + 3], now, model.followed)
        for index, model in enumerate(models)
    ]
    return {
        "models": figures,
        "series": series(window.minutes, parse_minutes(minutes), ms_per_instance=None),
        "redis_breakers": parse_breakers(
            redis_breakers, now=now, fresh_for=fresh_seconds(settings.PREDCACHE_STATS_FLUSH_SECONDS)
        ),
        **recent_events(model=None),
    }


def dashboard_model(*, model: ModelEndpoint, window: Window) -> dict[str, Any]:
    """One model's figures, its series over ``window`` and its recent events. Raises CacheUnavailable."""
    runtime = get_runtime()
    namespace = runtime.keyspace.namespace(model.pk)
    pipe = _pipeline(runtime.client)
    queued = queue_minutes_read(pipe, runtime.keyspace, namespace, window.minutes)
    _queue_figures(pipe, namespace)
    replies = _execute(pipe)
    events = recent_events(model=model)
    changes = events["version_changes"]
    figures = _figures(model, replies[queued:], time.time(), changes[0].version if changes else None)
    return {
        "figures": figures,
        "series": series(
            window.minutes, parse_minutes(replies[:queued]), ms_per_instance=figures.backend_ms_per_instance
        ),
        **events,
    }


def recent_events(*, model: ModelEndpoint | None) -> dict[str, list[Any]]:
    """The latest purges, warm runs and version changes (of one model, or of all): three queries."""
    purges = PurgeRecord.objects.select_related("model")
    runs = WarmRun.objects.select_related("model")
    changes = ModelVersionChange.objects.select_related("model")
    if model is not None:
        purges, runs, changes = (
            purges.filter(model=model),
            runs.filter(model=model),
            changes.filter(model=model),
        )
    return {
        "purges": list(purges[:RECENT_EVENTS]),
        "warm_runs": list(runs[:RECENT_EVENTS]),
        "version_changes": list(changes[:RECENT_EVENTS]),
    }
