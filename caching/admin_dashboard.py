"""The admin's dashboard: all models at a glance at /admin/dashboard/, one page per model below it.

Staff only (wrapped in the admin site's login check) and in the admin's look; the charts are
drawn in the browser by the vendored Chart.js from JSON embedded with ``json_script``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path
from django.views.decorators.http import require_safe

from caching.core.store import CacheUnavailable
from caching.dashboard_selectors import (
    Window,
    dashboard_model,
    dashboard_overview,
    window_hours_offered,
)
from caching.models import ModelEndpoint
from caching.services.usage import model_usage_due, model_usage_measure


def _window(request: HttpRequest) -> Window:
    offered = window_hours_offered()
    try:
        hours = int(request.GET.get("hours", ""))
    except ValueError:
        hours = 0
    return Window.last(hours if hours in offered else offered[0])


def _context(request: HttpRequest, title: str, window: Window, **values: Any) -> dict[str, Any]:
    if not request.user.has_perm("caching.view_modelendpoint"):
        raise PermissionDenied
    return {
        **admin.site.each_context(request),
        "title": title,
        "subtitle": None,
        "window": window,
        "windows": window_hours_offered(),
        **values,
    }


@require_safe
def overview(request: HttpRequest) -> HttpResponse:
    """Every model: traffic, hit ratio and backend calls summed over all models, then a row per model."""
    window = _window(request)
    context = _context(request, "Dashboard", window)
    try:
        context.update(dashboard_overview(window=window))
    except CacheUnavailable as exc:
        context["redis_error"] = str(exc)
    return TemplateResponse(request, "admin/dashboard/overview.html", context)


@require_safe
def model_page(request: HttpRequest, name: str) -> HttpResponse:
    """One model: its charts, entries and memory (measured again when stale), breakers and events."""
    window = _window(request)
    context = _context(request, f"Dashboard: {name}", window)
    model = get_object_or_404(ModelEndpoint, name=name)
    context["model"] = model
    try:
        data = dashboard_model(model=model, window=window)
        figures = data["figures"]
        if model_usage_due(usage=figures.usage, now=time.time()):
            measured = model_usage_measure(model=model)  # None: another page is measuring it now
            if measured is not None:
                data["figures"] = dataclasses.replace(figures, usage=measured)
        context.update(data)
    except CacheUnavailable as exc:
        context["redis_error"] = str(exc)
    return TemplateResponse(request, "admin/dashboard/model.html", context)


urlpatterns = [
    path("", admin.site.admin_view(overview), name="dashboard"),
    path("<str:name>/", admin.site.admin_view(model_page), name="dashboard-model"),
]
