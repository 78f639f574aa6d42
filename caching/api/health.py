"""Liveness and readiness probes, and where the metrics scraper is answered first."""

from __future__ import annotations

from collections.abc import Callable

from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from caching.api.metrics import metrics
from caching.core.cluster import ping as redis_ping
from caching.core.store import REDIS_FAILURES
from caching.installation import InstallationUnnamed
from caching.runtime import get_runtime


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving requests."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready (200) when what predictions cannot do without answers: the database, and the runtime.

    Redis is reported, not required: without it predictions go to the model (the breaker skips
    Redis), so a Memorystore failover must not keep new instances from starting. ``status`` is
    ``ok``, ``degraded`` (ready, Redis down) or ``unavailable`` (503, naming what failed).
    """
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready"
        checks["database"] = f"error: {exc.__class__.__name__}"
    runtime_built = False
    try:
        runtime = get_runtime()
        runtime_built = True
        redis_ping(runtime.client)
        checks["redis"] = "ok"
    except REDIS_FAILURES as exc:
        checks["redis"] = f"error: {exc.__class__.__name__} (predictions go to the model)"
    except DatabaseError:  # the runtime is built on first use, and reads the installation id first
        checks["redis"] = "unknown: the database must answer first"
    except InstallationUnnamed:
        checks["redis"] = "unknown: the database holds no installation id (run migrate)"
    ready = checks["database"] == "ok" and runtime_built
    status = "unavailable" if not ready else ("ok" if checks["redis"] == "ok" else "degraded")
    return JsonResponse({"status": status, "checks": checks}, status=200 if ready else 503)


_PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": healthz,
    "/readyz": readyz,
    "/metrics": metrics,
}


class ProbeMiddleware:
    """Answers the health probes and /metrics first, before any middleware validates the Host header.

    Platforms (Cloud Run, Kubernetes) probe a container by its address, a Host that
    ``DJANGO_ALLOWED_HOSTS`` rightly does not list, and Prometheus scrapes it the same way; the
    probes reveal nothing a host check protects, and /metrics takes a token where its counts
    are not for everyone who reaches the port.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = _PROBES.get(request.path_info) if request.method in ("GET", "HEAD") else None
        return probe(request) if probe is not None else self.get_response(request)
