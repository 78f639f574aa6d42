"""The JSON error shape ``{"error": {"code", "message"}}`` for every failure a client can cause."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response


class ApiError(exceptions.APIException):
    """An error answered with a given status, machine-readable code and message."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.error_code = code
        self.message = message


NO_KEY_MESSAGE = "no API key: send 'Authorization: Api-Key <key>' or an 'X-Api-Key: <key>' header"


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _flatten(detail: Any) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return "; ".join(_flatten(item) for item in detail)
    return str(detail)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: every API exception becomes the JSON error shape."""
    if isinstance(exc, Http404):
        exc = ApiError(404, "not_found", "not found")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None  # a bug, not a client error: let it surface as a 500 and be logged
    if isinstance(exc, ApiError):
        code, message = exc.error_code, exc.message
    elif isinstance(exc, exceptions.NotAuthenticated):  # DRF's words do not say what to send
        code, message = "not_authenticated", NO_KEY_MESSAGE
    else:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "invalid_request"
        message = _flatten(exc.detail)
    headers: dict[str, str] = {}
    auth_header = getattr(exc, "auth_header", None)  # set by APIView for 401 answers
    if auth_header:
        headers["WWW-Authenticate"] = auth_header
    wait = getattr(exc, "wait", None)
    if wait:
        headers["Retry-After"] = str(int(wait))
    return Response(error_body(code, message), status=exc.status_code, headers=headers)


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """handler404: JSON for API clients as well as browsers."""
    return JsonResponse(error_body("not_found", f"no route for {request.path[:200]}"), status=404)


def json_bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """handler400 (e.g. a disallowed Host header)."""
    return JsonResponse(error_body("bad_request", "bad request"), status=400)


def json_server_error(request: HttpRequest) -> JsonResponse:
    """handler500: even a bug answers in the error shape (and is logged by Django)."""
    return JsonResponse(error_body("internal_error", "internal server error"), status=500)
