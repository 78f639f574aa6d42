"""Validation of predict request bodies at the edge: strict JSON, the row format, size limits."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from django.utils.http import parse_header_parameters
from rest_framework.request import Request

from caching.api.errors import InvalidRequest, LengthRequired, PayloadTooLarge, UnsupportedMediaType
from caching.core.canonical import parse_json

ALLOWED_FIELDS = frozenset({"instances", "parameters"})
JSON = "application/json"


def read_json_body(request: HttpRequest | Request) -> Any:
    """The parsed body of a JSON request; raises for 415, 411, 413 and 400 (InvalidJSON)."""
    meta = request.META
    content_type = meta.get("CONTENT_TYPE", meta.get("HTTP_CONTENT_TYPE", ""))
    if content_type != JSON:  # what clients send: spared parsing its parameters
        media_type, params = parse_header_parameters(content_type)
        if media_type != JSON:
            raise UnsupportedMediaType("send the body as Content-Type: application/json")
        if params.get("charset", "utf-8").lower() not in ("utf-8", "utf8"):
            raise UnsupportedMediaType("the body must be UTF-8 encoded JSON")
    limit = settings.PREDCACHE_MAX_BODY_BYTES
    length = meta.get("CONTENT_LENGTH")
    if not length and "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
        # WSGI gives Django no way to read a chunked body; say so instead of "empty document".
        raise LengthRequired("send the body with a Content-Length header")
    try:
        declared = int(length or 0)
    except ValueError:
        raise InvalidRequest("Content-Length is not a number") from None
    if declared > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes, the limit is {limit}")
    try:
        body = request.body
    except RequestDataTooBig:
        raise PayloadTooLarge(f"the body is over the limit of {limit} bytes") from None
    return parse_json(body)


def predict_payload(document: Any) -> tuple[list[Any], dict[str, Any] | None]:
    """Check the row format: ``instances`` a non-empty list, ``parameters`` an object if present."""
    if not isinstance(document, dict):
        raise InvalidRequest("the body must be a JSON object with an 'instances' list")
    if not ALLOWED_FIELDS.issuperset(document):
        unknown = sorted(set(document) - ALLOWED_FIELDS)
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown)[:200]}")
    instances = document.get("instances")
    if not isinstance(instances, list):
        raise InvalidRequest("'instances' must be a list")
    if not instances:
        raise InvalidRequest("'instances' must not be empty")
    if len(instances) > settings.PREDCACHE_MAX_INSTANCES:
        raise PayloadTooLarge(
            f"{len(instances)} instances sent, the limit is {settings.PREDCACHE_MAX_INSTANCES}"
        )
    parameters = document.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidRequest("'parameters' must be an object")
    return instances, parameters
