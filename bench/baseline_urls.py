"""The baseline: a bare Django view doing one Redis GET, under the same middleware and gunicorn."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from caching.runtime import get_runtime

BASELINE_KEY = "bench:baseline"


def one_get(request: HttpRequest) -> HttpResponse:
    value = get_runtime().client.get(BASELINE_KEY)
    return HttpResponse(value or b"null", content_type="application/json")


urlpatterns = [path("baseline", one_get)]
