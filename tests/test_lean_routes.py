"""The predict routes run behind the security middleware alone, and answer as the other routes do.

Sessions, CSRF, login authentication, messages and WhiteNoise are not run for them
(caching/api/lean.py); the Host check, the HTTPS redirect and the security headers are, as
MIDDLEWARE configures them.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import resolve

from caching.api.lean import lean_patterns

pytestmark = pytest.mark.django_db

PREDICT = "/v1/models/echo:predict"
VERTEX_PREDICT = "/v1/projects/demo/locations/us-central1/endpoints/123:predict"
BODY = b'{"instances": [1]}'


class SeenByMiddleware:
    """A middleware of the site's stack that says it saw the request."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response: HttpResponse = self.get_response(request)
        response["X-Seen-By-Stack"] = "yes"
        return response


def post(path: str, key: str, headers: dict[str, str] | None = None) -> Any:
    return Client().post(
        path, data=BODY, content_type="application/json", headers={"X-Api-Key": key, **(headers or {})}
    )


def test_the_predict_routes_skip_the_rest_of_the_stack(settings, api_key, http_model, backend):
    position = settings.MIDDLEWARE.index("caching.api.lean.LeanRoutes") + 1
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE[:position],
        f"{__name__}.SeenByMiddleware",
        *settings.MIDDLEWARE[position:],
    ]
    predicted = post(PREDICT, api_key)
    assert predicted.status_code == 200
    assert "X-Seen-By-Stack" not in predicted
    assert post(VERTEX_PREDICT, api_key).status_code == 404  # no such vertex model, answered lean
    assert "X-Seen-By-Stack" not in post(VERTEX_PREDICT, api_key)
    assert Client().get("/v1/schema")["X-Seen-By-Stack"] == "yes"
    assert post("/v1/admin/models/echo:purge", api_key)["X-Seen-By-Stack"] == "yes"


def test_a_hit_carries_the_headers_the_stack_would_add(api_key, http_model, backend):
    post(PREDICT, api_key)
    hit = post(PREDICT, api_key)
    assert hit["X-Cache"] == "HIT"
    assert hit["Allow"] == "POST"
    assert hit["Content-Length"] == str(len(hit.content))
    assert hit["X-Content-Type-Options"] == "nosniff"
    assert hit["Referrer-Policy"] == "same-origin"
    assert hit["Cross-Origin-Opener-Policy"] == "same-origin"
    assert hit["X-Frame-Options"] == "DENY"
    assert "Set-Cookie" not in hit and "Vary" not in hit


@pytest.mark.parametrize("path", [PREDICT, VERTEX_PREDICT])
def test_a_host_not_allowed_is_refused_before_the_route(settings, api_key, http_model, backend, path):
    settings.ALLOWED_HOSTS = ["predcache.example.com"]
    refused = post(path, api_key, {"Host": "evil.example"})
    assert refused.status_code == 400
    assert refused.json() == {"error": {"code": "bad_request", "message": "bad request"}}
    assert backend.calls() == []
    assert post(PREDICT, api_key, {"Host": "predcache.example.com:8443"}).status_code == 200


def test_https_is_required_and_announced_where_configured(settings, api_key, http_model, backend):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    redirected = post(PREDICT, api_key)
    assert (redirected.status_code, redirected["Location"]) == (301, f"https://testserver{PREDICT}")
    assert backend.calls() == []
    secure = post(PREDICT, api_key, {"X-Forwarded-Proto": "https"})
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == "max-age=3600"


def test_without_the_security_middleware_the_routes_send_none_of_its_headers(
    settings, api_key, http_model, backend
):
    settings.MIDDLEWARE = [
        path for path in settings.MIDDLEWARE if path != "django.middleware.security.SecurityMiddleware"
    ]
    response = post(PREDICT, api_key)
    assert response.status_code == 200
    assert "X-Content-Type-Options" not in response


def test_the_lean_routes_are_what_the_urlconf_resolves_them_to():
    assert [view.__name__ for _, view in lean_patterns()] == ["predict", "vertex_predict"]
    assert resolve(PREDICT).func.__name__ == "predict"
    assert resolve(VERTEX_PREDICT).func.__name__ == "vertex_predict"
