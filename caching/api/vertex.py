"""Drop-in routes for Vertex AI clients: the aiplatform SDK talks to predcache unchanged.

Point the SDK at predcache (``api_endpoint``, REST transport) and send the API key as a
header (``client_options={"api_key": KEY}`` sends ``x-goog-api-key``); predict calls on
the registered ``vertex`` model's endpoint are then answered from the cache.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request

from caching.api import schema
from caching.api.lean import lean_route
from caching.api.parsing import predict_payload, read_json_body
from caching.api.views import JsonApiView, cache_directives, prediction_response
from caching.backends.vertex import TARGET_PATTERN
from caching.core.access import KeyAccess
from caching.selectors import vertex_endpoint_deployments
from caching.services import ModelNotFound, served_prediction, vertex_model_for_key, vertex_prediction_admit

# One path parameter per segment, as OpenAPI path parameters hold no "/". The segments are
# loose here and checked against TARGET_PATTERN in the view, so a bad one is a JSON 404 that
# names the endpoint.
ENDPOINT_PATH = (
    r"v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/endpoints/(?P<endpoint>[^/:]+)"
)


def _segment(name: str, pattern: str, example: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(
        name,
        str,
        OpenApiParameter.PATH,
        description=description,
        pattern=pattern,
        examples=[OpenApiExample(example, value=example)],
    )


# The patterns are TARGET_PATTERN's, segment by segment.
_PATH_PARAMETERS = [
    _segment("project", r"^[^/\s]+$", "my-project", "Google Cloud project ID or number"),
    _segment("location", r"^[a-z0-9-]+$", "us-central1", "Vertex AI region"),
    _segment("endpoint", r"^[^/\s:]+$", "1234567890", "Vertex AI endpoint ID"),
]


def _resource_name(project: str, location: str, endpoint: str) -> str:
    """``projects/P/locations/L/endpoints/E``, or a 404 if that is not a Vertex endpoint's name."""
    name = f"projects/{project}/locations/{location}/endpoints/{endpoint}"
    if not TARGET_PATTERN.fullmatch(name):
        raise ModelNotFound.for_endpoint(name)
    return name


class VertexPredictView(JsonApiView):
    """The OpenAPI description of :func:`vertex_predict`, which serves the route (DRF never dispatches it)."""

    @extend_schema(
        operation_id="vertex_predict",
        summary="Vertex AI PredictionService.Predict, answered from the cache where possible",
        parameters=[*_PATH_PARAMETERS, *schema.PREDICT_HEADERS],
        request=schema.json_request(schema.PredictRequest),
        examples=schema.PREDICT_EXAMPLES,
        responses={
            200: OpenApiResponse(
                schema.VertexPredictResponseSerializer, description="Vertex AI PredictResponse"
            ),
            **schema.PREDICT_ERRORS,
        },
    )
    def post(self, request: Request, project: str, location: str, endpoint: str) -> HttpResponse:
        return vertex_predict(request._request, project=project, location=location, endpoint=endpoint)


@lean_route(VertexPredictView)
def vertex_predict(
    request: HttpRequest, project: str, location: str, endpoint: str, access: KeyAccess
) -> HttpResponse:
    """``POST /v1/projects/P/locations/L/endpoints/E:predict`` with Vertex AI's request and response."""
    name = _resource_name(project, location, endpoint)
    served = vertex_prediction_admit(access=access, endpoint=name)
    instances, parameters = predict_payload(read_json_body(request))
    result = served_prediction(
        served=served, instances=instances, parameters=parameters, directives=cache_directives(request)
    )
    # Protobuf JSON leaves out unset fields rather than sending null.
    body: dict[str, Any] = {"predictions": result.predictions}
    if result.deployed_model_id is not None:
        body["deployedModelId"] = result.deployed_model_id
    if result.model_version_id is not None:
        body["modelVersionId"] = result.model_version_id
    return prediction_response(body, result)


class VertexEndpointView(JsonApiView):
    """``GET /v1/projects/P/locations/L/endpoints/E``: enough of the Endpoint resource for the SDK."""

    http_method_names = ["get", "head"]

    @extend_schema(
        operation_id="vertex_endpoint",
        summary="Vertex AI EndpointService.GetEndpoint for a registered vertex model",
        parameters=_PATH_PARAMETERS,
        responses={
            200: schema.VertexEndpointSerializer,
            **schema.errors(401, 403, 404, 405),
        },
    )
    def get(self, request: Request, project: str, location: str, endpoint: str) -> JsonResponse:
        name = _resource_name(project, location, endpoint)
        served = vertex_model_for_key(access=request.auth.access, endpoint=name)
        deployed = vertex_endpoint_deployments(model_id=served.model_id)
        return JsonResponse(
            {
                "name": name,
                "displayName": served.name,
                "deployedModels": deployed,
                "trafficSplit": {model["id"]: 100 for model in deployed[:1]},
            }
        )
