"""The OpenAPI description of the API: request bodies, responses, statuses, headers, the key scheme.

The views parse their bodies themselves (strictly, once, with orjson), so DRF has no parser
and no serializer to describe them from: request bodies are hand-written JSON Schema, held by
:class:`JsonBody` subclasses next to the code that validates them, and must say exactly what
that code accepts. Responses are described with serializers used for the schema only.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers

from caching.core.canonical import INTEGER_MAX, INTEGER_MIN
from caching.models import MODEL_NAME_PATTERN


class ApiSchema(AutoSchema):
    """drf-spectacular's AutoSchema, with every request body required.

    Each body this API reads is required: even ``{}`` (purge a whole model) must be sent, and
    an empty body is a 400 or 415. drf-spectacular would infer "optional" for a schema
    without top-level required properties (a ``oneOf``).
    """

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation: dict[str, Any] | None = super().get_operation(*args, **kwargs)
        if operation is not None and "requestBody" in operation:
            operation["requestBody"]["required"] = True
        return operation


# --- request bodies -----------------------------------------------------------------------

JSON_VALUE_REF = {"$ref": "#/components/schemas/JsonValue"}


def _json_value_schema() -> dict[str, Any]:
    return {
        "description": (
            "Any JSON value. An integer (a number written without a fraction or exponent) must "
            f"lie in {INTEGER_MIN}..{INTEGER_MAX}: a wider one could not be kept exactly, and is "
            "refused (400). NaN and Infinity are not JSON. Arrays and objects nest at most "
            f"{settings.PREDCACHE_MAX_DEPTH} levels deep (PREDCACHE_MAX_DEPTH)."
        ),
        "nullable": True,
        # JSON Schema cannot see how a number is spelled, the server can: 1e300 is a double to
        # it, an integer to JSON Schema. So integral values must fit the integer branch, and
        # the schema is stricter than the server only for integral doubles past 64 bits.
        "anyOf": [
            {"type": "string"},
            {"type": "boolean"},
            {"type": "integer", "minimum": INTEGER_MIN, "maximum": INTEGER_MAX},
            {"type": "number", "format": "double", "not": {"type": "integer"}},
            {"type": "array", "items": JSON_VALUE_REF},
            {"type": "object", "additionalProperties": JSON_VALUE_REF},
        ],
    }


def instances_schema(description: str) -> dict[str, Any]:
    """A non-empty list of JSON values, at most PREDCACHE_MAX_INSTANCES long (more is a 413)."""
    return {
        "type": "array",
        "items": JSON_VALUE_REF,
        "minItems": 1,
        "maxItems": settings.PREDCACHE_MAX_INSTANCES,
        "description": f"{description} More than PREDCACHE_MAX_INSTANCES is a 413.",
    }


def parameters_schema(description: str) -> dict[str, Any]:
    """An optional object of model parameters; ``null`` is the same as leaving it out."""
    return {
        "type": "object",
        "additionalProperties": JSON_VALUE_REF,
        "nullable": True,
        "description": f"{description} `null` is the same as leaving it out.",
    }


class JsonBody(serializers.Serializer):
    """Names a request body the view parses itself; ``json_schema()`` is its OpenAPI schema."""

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        raise NotImplementedError


class JsonBodyExtension(OpenApiSerializerExtension):
    """Emits a :class:`JsonBody`'s own schema as its component (and the JsonValue it refers to)."""

    target_class = JsonBody
    match_subclasses = True

    def map_serializer(self, auto_schema: AutoSchema, direction: Any) -> dict[str, Any]:
        auto_schema.registry.register_on_missing(
            ResolvedComponent(
                name="JsonValue",
                type=ResolvedComponent.SCHEMA,
                object="JsonValue",
                schema=_json_value_schema(),
            )
        )
        target = self.target if isinstance(self.target, type) else type(self.target)
        return target.json_schema()


def json_request(body: type[JsonBody]) -> dict[str, Any]:
    """``extend_schema(request=...)`` for a view without parsers: the media type is named here."""
    return {"application/json": body}


class PredictRequest(JsonBody):
    """The row format of Vertex AI, TF Serving and KServe v1; checked by parsing.predict_payload."""

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "instances": instances_schema("One JSON value per instance; predictions come back in order."),
                "parameters": parameters_schema("Model parameters, sent to the model and part of the key."),
            },
            "required": ["instances"],
            "additionalProperties": False,
        }


PREDICT_EXAMPLES = [
    OpenApiExample(
        "iris", value={"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}, request_only=True
    ),
]


# --- responses ------------------------------------------------------------------------------


class PredictResponseSerializer(serializers.Serializer):
    predictions = serializers.ListField(
        child=serializers.JSONField(), help_text="predictions[i] answers instances[i]."
    )
    model = serializers.CharField()
    modelVersionId = serializers.CharField(allow_null=True)
    deployedModelId = serializers.CharField(allow_null=True)


class VertexPredictResponseSerializer(serializers.Serializer):
    predictions = serializers.ListField(
        child=serializers.JSONField(), help_text="predictions[i] answers instances[i]."
    )
    deployedModelId = serializers.CharField(required=False)
    modelVersionId = serializers.CharField(required=False)


class VertexDeployedModelSerializer(serializers.Serializer):
    id = serializers.CharField()
    modelVersionId = serializers.CharField(required=False)


class VertexEndpointSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="projects/P/locations/L/endpoints/E")
    displayName = serializers.CharField(help_text="The predcache model name")
    deployedModels = VertexDeployedModelSerializer(
        many=True, help_text="The deployed model the cache follows"
    )
    trafficSplit = serializers.DictField(child=serializers.IntegerField())


ERROR_SERIALIZER = inline_serializer(
    "Error",
    fields={
        "error": inline_serializer(
            "ErrorDetail",
            fields={"code": serializers.CharField(), "message": serializers.CharField()},
        )
    },
)


def error_response(code: str, description: str) -> OpenApiResponse:
    """An error answer in the ``{"error": {"code", "message"}}`` shape, with an example."""
    return OpenApiResponse(
        ERROR_SERIALIZER,
        description=description,
        examples=[OpenApiExample(code, value={"error": {"code": code, "message": description}})],
    )


ERROR_RESPONSES = {
    400: error_response(
        "invalid_request",
        "Malformed body, wrong types, unknown fields, NaN/Infinity, an integer outside "
        "-2**63..2**64-1, nesting deeper than PREDCACHE_MAX_DEPTH, or instances the model rejects",
    ),
    401: error_response("not_authenticated", "Missing, invalid, revoked or expired API key"),
    403: error_response(
        "model_not_in_scope",
        "The API key is limited to other models (said alike whether the model asked for exists or not)",
    ),
    404: error_response("model_not_found", "Unknown model"),
    405: error_response("method_not_allowed", "Another method than the one documented for this path"),
    411: error_response("length_required", "Chunked body without Content-Length"),
    413: error_response("payload_too_large", "Body or instance count over the limit"),
    415: error_response("unsupported_media_type", "Body is not application/json (UTF-8)"),
    429: error_response(
        "rate_limited", "The API key's rate limit is used up; retry after the seconds in Retry-After"
    ),
    502: error_response("backend_error", "The model server failed"),
    503: error_response("backend_unavailable", "The model server is unavailable"),
    504: error_response("backend_timeout", "The model server timed out, or only-if-cached and not cached"),
}


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """The shared error responses for ``statuses``."""
    return {status: ERROR_RESPONSES[status] for status in statuses}


# What a route that reads a body and predicts can answer besides 200.
PREDICT_ERRORS = errors(400, 401, 403, 404, 405, 411, 413, 415, 429, 502, 503, 504)


# --- parameters and headers -------------------------------------------------------------------

MODEL_PARAMETER = OpenApiParameter(
    "model",
    str,
    OpenApiParameter.PATH,
    description="Registered model name (any other name is a 404)",
    pattern=f"^{MODEL_NAME_PATTERN}$",
    examples=[OpenApiExample("iris", value="iris")],
)


def _response_header(
    name: str, kind: type, description: str, *, statuses: tuple[int, ...] = (200,), **extra: object
) -> OpenApiParameter:
    return OpenApiParameter(
        name, kind, OpenApiParameter.HEADER, description=description, response=list(statuses), **extra
    )


PREDICT_HEADERS = [
    OpenApiParameter(
        "Cache-Control",
        str,
        OpenApiParameter.HEADER,
        description="no-cache (recompute and store), no-store (recompute, store nothing), "
        "max-age=N (only entries younger than N s), min-fresh=N (only entries still fresh for N s "
        "more; others are recomputed and stored), only-if-cached (504 unless all are cached); "
        "other directives are ignored",
    ),
    _response_header(
        "X-Cache",
        str,
        "HIT, MISS, PARTIAL, STALE or BYPASS for the request as a whole",
        enum=["HIT", "MISS", "PARTIAL", "STALE", "BYPASS"],
    ),
    _response_header("Age", int, "Seconds since the oldest cached prediction served was computed"),
    _response_header("X-Cache-Hits", int, "Instances answered from the cache"),
    _response_header("X-Cache-Misses", int, "Instances computed by the backend"),
    _response_header("Cache-Status", str, "RFC 9211 cache status"),
    _response_header(
        "Retry-After", int, "Whole seconds (at least 1) until the API key may try again", statuses=(429,)
    ),
]


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "caching.api.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        # X-Api-Key takes the bare key, so what Swagger UI's "Authorize" sends works as typed.
        # No angle brackets: Swagger UI renders descriptions as HTML and would eat them.
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-Api-Key",
            "description": (
                "The API key alone in `X-Api-Key` (or `X-Goog-Api-Key`, as Google's client "
                "libraries send it), or as `Authorization: Api-Key KEY`."
            ),
        }
