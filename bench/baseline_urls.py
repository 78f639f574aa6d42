"""The floor: a bare Django view that parses the body and does one Redis GET, served as predict is.

``/baseline`` is marked lean, so it runs behind what the predict routes run behind (Django's
handler, then the lean dispatch with the security middleware: caching/api/lean.py), and the
comparison weighs only what predcache does for a hit: the API key, the checks of the body, the
read-through and the headers. ``/baseline-full-stack`` is the same view down the whole stack.
"""

import orjson
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from caching.api.lean import lean
from caching.runtime import get_runtime

BASELINE_KEY = "bench:baseline"


def one_get(request: HttpRequest) -> HttpResponse:
    """Parse the body, one Redis GET, answer with its value."""
    orjson.loads(request.body)
    value = get_runtime().client.get(BASELINE_KEY)
    return HttpResponse(value or b"null", content_type="application/json")


urlpatterns = [
    path("baseline", lean(one_get)),
    # As the predict routes ran before they were lean (CSRF-exempt as DRF's views are).
    path("baseline-full-stack", csrf_exempt(one_get)),
]
