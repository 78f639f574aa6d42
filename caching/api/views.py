"""The predict route: validate, call one service, render. Served lean (:mod:`caching.api.lean`)."""

from __future__ import annotations

import re
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from caching.api import schema
from caching.api.lean import add_own_headers, lean_route
from caching.api.parsing import predict_payload, read_json_body
from caching.core.access import KeyAccess
from caching.core.spec import NO_DIRECTIVES, Directives, Prediction
from caching.models import MODEL_NAME_PATTERN
from caching.services import ModelNotFound, prediction_admit, prediction_serve

_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_DIGITS = re.compile(r"[0-9]+")
# RFC 9211 Cache-Status values, by (X-Cache, whether the fresh predictions were stored).
_CACHE_STATUS = {
    ("HIT", False): "predcache; hit",
    ("MISS", True): "predcache; fwd=miss; stored",
    ("MISS", False): "predcache; fwd=miss",
    ("PARTIAL", True): "predcache; fwd=partial; stored",
    ("PARTIAL", False): "predcache; fwd=partial",
    ("BYPASS", False): "predcache; fwd=bypass",
    ("STALE", False): "predcache; hit; detail=stale",
    ("STALE", True): "predcache; hit; detail=stale",
}
_L1_CACHE_STATUS = "predcache; hit; detail=l1"  # a HIT from the in-process tier: no Redis command


class JsonOnlyNegotiation(BaseContentNegotiation):
    """The API speaks JSON only: skip parsing the Accept header on every request."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Request, renderers: list[Any], format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


class JsonApiView(APIView):
    """A route that answers JSON, parses any body itself, and only its own methods.

    ``http_method_names`` names those methods alone, so OPTIONS, HEAD and the rest are a
    JSON 405 with an ``Allow`` header (DRF would answer OPTIONS with its metadata).
    """

    http_method_names = ["post"]
    parser_classes: list[Any] = []  # the body is parsed strictly (orjson) in read_json_body
    renderer_classes = [JSONRenderer]  # for errors; predictions are rendered with orjson below
    content_negotiation_class = JsonOnlyNegotiation


class PredictView(JsonApiView):
    """The OpenAPI description of :func:`predict`, which serves the route (DRF never dispatches it)."""

    @extend_schema(
        operation_id="predict",
        summary="Predict, answering repeated instances from the cache",
        parameters=[schema.MODEL_PARAMETER, *schema.PREDICT_HEADERS],
        request=schema.json_request(schema.PredictRequest),
        examples=schema.PREDICT_EXAMPLES,
        responses={
            200: OpenApiResponse(
                schema.PredictResponseSerializer, description="Predictions in request order"
            ),
            **schema.PREDICT_ERRORS,
        },
    )
    def post(self, request: Request, model: str) -> HttpResponse:
        return predict(request._request, model=model)


@lean_route(PredictView)
def predict(request: HttpRequest, model: str, access: KeyAccess) -> HttpResponse:
    """``POST /v1/models/{model}:predict`` — predictions, served from the cache where possible."""
    prediction_admit(access=access, model_name=model)
    if not _MODEL_NAME.fullmatch(model):
        raise ModelNotFound.named(model)
    instances, parameters = predict_payload(read_json_body(request))
    served, result = prediction_serve(
        model_name=model, instances=instances, parameters=parameters, directives=cache_directives(request)
    )
    body = {
        "predictions": result.predictions,
        "model": served.name,
        "modelVersionId": result.model_version_id,
        "deployedModelId": result.deployed_model_id,
    }
    return prediction_response(body, result)


def prediction_response(body: dict[str, Any], result: Prediction) -> HttpResponse:
    """Render predictions with orjson (DRF's renderer is slower) and the cache headers."""
    response = HttpResponse(orjson.dumps(body), content_type="application/json")
    status = _L1_CACHE_STATUS if result.l1 else _CACHE_STATUS[result.cache_status, result.stored]
    headers = [
        ("X-Cache", result.cache_status),
        ("X-Cache-Hits", str(result.hits)),
        ("X-Cache-Misses", str(result.misses)),
        ("Cache-Status", status),
    ]
    if result.age is not None:
        headers.append(("Age", str(result.age)))
    add_own_headers(response, headers)
    return response


def cache_directives(request: HttpRequest) -> Directives:
    """The request's ``Cache-Control`` directives we act on; unknown ones are ignored (RFC 9111)."""
    header = request.META.get("HTTP_CACHE_CONTROL")
    if not header:
        return NO_DIRECTIVES
    found: dict[str, str | None] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        found[name.strip().lower()] = value.strip().strip('"') if value else None
    return Directives(
        no_cache="no-cache" in found,
        no_store="no-store" in found,
        max_age=_delta_seconds(found.get("max-age")),
        only_if_cached="only-if-cached" in found,
        min_fresh=_delta_seconds(found.get("min-fresh")),
    )


def _delta_seconds(value: str | None) -> int | None:
    """RFC 9111 delta-seconds: ASCII digits, capped at 2**31; anything else is ignored."""
    if value is None or not _DIGITS.fullmatch(value):
        return None
    return min(int(value[:12]), 2**31) if len(value) <= 12 else 2**31
