"""The landing page at ``/``: what this service is, and where its admin, API docs and probes are."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe


@require_safe
def landing(request: HttpRequest) -> HttpResponse:
    """A small HTML page for people (and the admin's "View site" link); the API lives under /v1/."""
    return render(
        request, "predcache/landing.html", {"base_url": request.build_absolute_uri("/").rstrip("/")}
    )
