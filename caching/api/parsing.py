"""Validation of predict request bodies at the edge: strict JSON, the row format, size limits."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.utils.http import parse_header_parameters
from rest_framework.request import Request

from caching.api.errors import ApiError
from caching.core.canonical import InvalidJSON, parse_json

ALLOWED_FIELDS = frozenset({"instances", "parameters"})


def too_large(message: str) -> ApiError:
    return ApiError(413, "payload_too_large", message)


def read_json_body(request: Request) -> Any:
    """The parsed body of a JSON request, or an ApiError (415, 413, 400)."""
    media_type, params = parse_header_parameters(request.content_type or "")
    if media_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as Content-Type: application/json")
    if params.get("charset", "utf-8").lower() not in ("utf-8", "utf8"):
        raise ApiError(415, "unsupported_media_type", "the body must be UTF-8 encoded JSON")
    limit = settings.PREDCACHE_MAX_BODY_BYTES
    if (
        not request.META.get("CONTENT_LENGTH")
        and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
    ):
        # WSGI gives Django no way to read a chunked body; say so instead of "empty document".
        raise ApiError(411, "length_required", "send the body with a Content-Length header")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ApiError(400, "invalid_request", "Content-Length is not a number") from None
    if declared > limit:
        raise too_large(f"the body is {declared} bytes, the limit is {limit}")
    try:
        body = request.body
    except RequestDataTooBig:
        raise too_large(f"the body is over the limit of {limit} bytes") from None
    try:
        return parse_json(body)
    except InvalidJSON as exc:
        raise ApiError(400, "invalid_json", str(exc)) from None


def predict_payload(document: Any) -> tuple[list[Any], dict[str, Any] | None]:
    """Check the row format: ``instances`` a non-empty list, ``parameters`` an object if present."""
    if not isinstance(document, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object with an 'instances' list")
    unknown = sorted(set(document) - ALLOWED_FIELDS)
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown field(s): {', '.join(unknown)[:200]}")
    instances = document.get("instances")
    if not isinstance(instances, list):
        raise ApiError(400, "invalid_request", "'instances' must be a list")
    if not instances:
        raise ApiError(400, "invalid_request", "'instances' must not be empty")
    if len(instances) > settings.PREDCACHE_MAX_INSTANCES:
        raise too_large(f"{len(instances)} instances sent, the limit is {settings.PREDCACHE_MAX_INSTANCES}")
    parameters = document.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ApiError(400, "invalid_request", "'parameters' must be an object")
    return instances, parameters
