"""The JSON error shape ``{"error": {"code", "message"}}`` for every failure a client can cause.

Errors users cause are :class:`~caching.core.errors.PredcacheError` subclasses; their status comes
from the one table in :mod:`caching.core.errors`. DRF's own exceptions (a missing key, a method
not allowed) keep the status DRF gives them. Anything else is a bug, answered as a 500 and logged.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from caching.core.errors import STATUS, PredcacheError


class InvalidRequest(PredcacheError):
    """A malformed body or header, wrong types, unknown fields."""

    code = "invalid_request"


class LengthRequired(PredcacheError):
    """A chunked body: WSGI gives Django no way to read one."""

    code = "length_required"


class PayloadTooLarge(PredcacheError):
    """A body, or a number of instances, over the limit."""

    code = "payload_too_large"


class UnsupportedMediaType(PredcacheError):
    """A body that is not UTF-8 ``application/json``."""

    code = "unsupported_media_type"


NO_KEY_MESSAGE = "no API key: send 'Authorization: Api-Key <key>' or an 'X-Api-Key: <key>' header"


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _flatten(detail: Any) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return "; ".join(_flatten(item) for item in detail)
    return str(detail)


def error_answer(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str]] | None:
    """``(status, body, headers)`` answering ``exc``, or None when no client caused it."""
    if isinstance(exc, Http404):
        return STATUS["not_found"], error_body("not_found", "not found"), {}
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, PredcacheError):
        return exc.status, error_body(exc.code, exc.message), exc.headers
    if not isinstance(exc, exceptions.APIException):
        return None
    if isinstance(exc, exceptions.NotAuthenticated):  # DRF's words do not say what to send
        code, message = "not_authenticated", NO_KEY_MESSAGE
    else:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "invalid_request"
        message = _flatten(exc.detail)
    headers: dict[str, str] = {}
    auth_header = getattr(exc, "auth_header", None)  # set for 401 answers
    if auth_header:
        headers["WWW-Authenticate"] = auth_header
    wait = getattr(exc, "wait", None)
    if wait:
        headers["Retry-After"] = str(int(wait))
    return exc.status_code, error_body(code, message), headers


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: every error a client causes becomes the JSON error shape."""
    answer = error_answer(exc)
    if answer is None:
        return None  # a bug, not a client error: let it surface as a 500 and be logged
    status, body, headers = answer
    return Response(body, status=status, headers=headers)


_RENDERER = JSONRenderer()


def error_response(exc: Exception) -> HttpResponse | None:
    """The answer to ``exc`` outside DRF, byte for byte what :func:`api_exception_handler` renders."""
    answer = error_answer(exc)
    if answer is None:
        return None
    status, body, headers = answer
    return HttpResponse(
        _RENDERER.render(body), status=status, content_type=_RENDERER.media_type, headers=headers
    )


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """handler404: JSON for API clients as well as browsers."""
    return JsonResponse(
        error_body("not_found", f"no route for {request.path[:200]}"), status=STATUS["not_found"]
    )


def json_bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """handler400 (e.g. a disallowed Host header)."""
    return JsonResponse(error_body("bad_request", "bad request"), status=STATUS["bad_request"])


def json_server_error(request: HttpRequest) -> JsonResponse:
    """handler500: even a bug answers in the error shape (and is logged by Django)."""
    return JsonResponse(error_body("internal_error", "internal server error"), status=500)
