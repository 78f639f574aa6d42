"""``GET /metrics``: the Prometheus metrics of every process of this host, added up."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from caching.api.errors import error_body
from caching.runtime import built_runtime
from predcache_site.metrics_dir import forget_dead_live_gauges

TOKEN_MESSAGE = "send 'Authorization: Bearer <token>' with the token set in PREDCACHE_METRICS_TOKEN"


def metrics(request: HttpRequest) -> HttpResponse:
    """The text exposition format; 401 (JSON error) without the bearer token when one is set."""
    token = settings.PREDCACHE_METRICS_TOKEN
    if token and not _bearer_matches(request, token):
        return JsonResponse(
            error_body("not_authenticated", TOKEN_MESSAGE), status=401, headers={"WWW-Authenticate": "Bearer"}
        )
    runtime = built_runtime()
    if runtime is not None:  # this process's latest requests too (the others' within a second)
        runtime.stats.publish()
    registry = CollectorRegistry()
    # Read the files of all processes (gunicorn and Celery workers): settings set the directory.
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    forget_dead_live_gauges(Path(path))
    MultiProcessCollector(registry, path=path)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def _bearer_matches(request: HttpRequest, token: str) -> bool:
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    # Constant time: how much of a guess matched must not show in how long the answer takes.
    return scheme.lower() == "bearer" and hmac.compare_digest(sent.strip().encode(), token.encode())
