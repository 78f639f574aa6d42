"""OpenAPI descriptions of the predict route (serializers used for the schema only)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    inline_serializer,
)
from rest_framework import serializers


class PredictRequestSerializer(serializers.Serializer):
    instances = serializers.ListField(
        child=serializers.JSONField(), min_length=1, help_text="One JSON value per instance."
    )
    parameters = serializers.DictField(required=False, help_text="Model parameters; part of the cache key.")


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


def _error(description: str, code: str) -> OpenApiResponse:
    return OpenApiResponse(
        ERROR_SERIALIZER,
        description=description,
        examples=[OpenApiExample(code, value={"error": {"code": code, "message": description}})],
    )


ERROR_RESPONSES = {
    400: _error("Malformed body, wrong types, NaN/Infinity, too deep", "invalid_request"),
    401: _error("Missing or invalid API key", "not_authenticated"),
    404: _error("Unknown model", "model_not_found"),
    405: _error("Method not allowed", "method_not_allowed"),
    411: _error("Chunked body without Content-Length", "length_required"),
    413: _error("Body or instance count over the limit", "payload_too_large"),
    415: _error("Body is not application/json", "unsupported_media_type"),
    502: _error("The model server failed", "backend_error"),
    503: _error("The model server is unavailable", "backend_unavailable"),
    504: _error("The model server timed out, or only-if-cached and not cached", "backend_timeout"),
}


def _response_header(name: str, kind: type, description: str, **extra: object) -> OpenApiParameter:
    return OpenApiParameter(
        name, kind, OpenApiParameter.HEADER, description=description, response=[200], **extra
    )


CACHE_HEADERS = [
    OpenApiParameter(
        "Cache-Control",
        str,
        OpenApiParameter.HEADER,
        description="no-cache (recompute and store), no-store (recompute, store nothing), "
        "max-age=N (only entries younger than N s), only-if-cached (504 unless all are cached)",
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
]


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "caching.api.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'Send "Api-Key <key>" (or the key alone in an X-Api-Key header).',
        }
