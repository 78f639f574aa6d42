"""Drop-in routes for Vertex AI clients: the aiplatform SDK talks to predcache unchanged.

Point the SDK at predcache (``api_endpoint``, REST transport) and send the API key as a
header (``client_options={"api_key": KEY}`` sends ``x-goog-api-key``); predict calls on
the registered ``vertex`` model's endpoint are then answered from the cache.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse, JsonResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from caching.api import schema
from caching.api.errors import ApiError
from caching.api.parsing import predict_payload, read_json_body
from caching.api.views import JsonOnlyNegotiation, cache_directives, prediction_response, serve
from caching.backends.vertex import TARGET_PATTERN
from caching.selectors import served_vertex_model_get, vertex_endpoint_deployments
from caching.services import vertex_prediction_serve

ENDPOINT_PATH = r"v1/(?P<endpoint>projects/[^/]+/locations/[^/]+/endpoints/[^/:]+)"
_PATH_PARAMETERS = [
    OpenApiParameter("endpoint", str, OpenApiParameter.PATH, description="projects/P/locations/L/endpoints/E")
]


def _not_found(endpoint: str) -> ApiError:
    return ApiError(404, "model_not_found", f"no vertex model is registered for {endpoint[:300]!r}")


def _checked(endpoint: str) -> str:
    if not TARGET_PATTERN.fullmatch(endpoint):
        raise _not_found(endpoint)
    return endpoint


class VertexPredictView(APIView):
    """``POST /v1/projects/P/locations/L/endpoints/E:predict`` with Vertex AI's request and response."""

    parser_classes: list[Any] = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonOnlyNegotiation

    @extend_schema(
        operation_id="vertex_predict",
        summary="Vertex AI PredictionService.Predict, answered from the cache where possible",
        parameters=[*_PATH_PARAMETERS, *schema.CACHE_HEADERS],
        request=schema.PredictRequestSerializer,
        responses={
            200: OpenApiResponse(
                schema.VertexPredictResponseSerializer, description="Vertex AI PredictResponse"
            ),
            **schema.ERROR_RESPONSES,
        },
    )
    def post(self, request: Request, endpoint: str) -> HttpResponse:
        endpoint = _checked(endpoint)
        instances, parameters = predict_payload(read_json_body(request))
        directives = cache_directives(request)
        _, result = serve(
            lambda: vertex_prediction_serve(
                endpoint=endpoint, instances=instances, parameters=parameters, directives=directives
            ),
            not_found=lambda: _not_found(endpoint),
        )
        # Protobuf JSON leaves out unset fields rather than sending null.
        body: dict[str, Any] = {"predictions": result.predictions}
        if result.deployed_model_id is not None:
            body["deployedModelId"] = result.deployed_model_id
        if result.model_version_id is not None:
            body["modelVersionId"] = result.model_version_id
        return prediction_response(body, result)


class VertexEndpointView(APIView):
    """``GET /v1/projects/P/locations/L/endpoints/E``: enough of the Endpoint resource for the SDK."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonOnlyNegotiation

    @extend_schema(
        operation_id="vertex_endpoint",
        summary="Vertex AI EndpointService.GetEndpoint for a registered vertex model",
        parameters=_PATH_PARAMETERS,
        responses={200: schema.VertexEndpointSerializer, 404: schema.ERROR_RESPONSES[404]},
    )
    def get(self, request: Request, endpoint: str) -> JsonResponse:
        endpoint = _checked(endpoint)
        served = served_vertex_model_get(endpoint=endpoint)
        if served is None:
            raise _not_found(endpoint)
        deployed = vertex_endpoint_deployments(model_id=served.model_id)
        return JsonResponse(
            {
                "name": endpoint,
                "displayName": served.name,
                "deployedModels": deployed,
                "trafficSplit": {model["id"]: 100 for model in deployed[:1]},
            }
        )
