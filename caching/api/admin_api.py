"""The staff management API under ``/v1/admin/``: purges, for admin API keys and staff logins.

Every API key may predict; only keys granted it (``predcache keys create LABEL --admin``,
or "may administer" on the key's admin page) may manage. A logged-in staff user of the
Django admin may too, through its session (with Django's CSRF check).
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from caching.api import schema
from caching.api.authentication import ApiKeyAuthentication, VerifiedKey
from caching.api.errors import InvalidRequest, PayloadTooLarge
from caching.api.parsing import read_json_body
from caching.api.views import JsonApiView
from caching.core.access import ModelNotInScope
from caching.core.store import CacheUnavailable
from caching.models import MODEL_NAME_PATTERN, ModelEndpoint, PurgeRecord, PurgeScope
from caching.selectors import api_key_may_administer
from caching.services import ModelNotFound, PurgeRefused, model_cache_purge, model_instances_purge

_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
PURGE_FIELDS = frozenset({"version", "instances", "parameters"})


class IsAdminKeyOrStaff(BasePermission):
    """An admin API key, or an active staff user logged in to the Django admin."""

    message = "this API key may not manage predcache (create one with `predcache keys create LABEL --admin`)"

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, VerifiedKey):
            return api_key_may_administer(api_key=request.auth.api_key)
        user = request.user
        return bool(user is not None and user.is_active and user.is_staff)


def requester(request: Request) -> str:
    """Who asked, as purge records name them: ``api:<key name>`` or the staff username."""
    if isinstance(request.auth, VerifiedKey):
        return f"api:{request.auth.api_key.name}"
    return str(request.user.get_username())


def purge_request(document: Any) -> tuple[str | None, list[Any] | None, dict[str, Any] | None]:
    """``(version, instances, parameters)`` of a purge body: ``{}``, ``{"version"}`` or ``{"instances"}``."""
    if not isinstance(document, dict):
        raise InvalidRequest("the body must be a JSON object ({} purges the whole model)")
    unknown = sorted(set(document) - PURGE_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown)[:200]}")
    version, instances, parameters = (document.get(field) for field in ("version", "instances", "parameters"))
    if "version" in document:
        if "instances" in document or "parameters" in document:
            raise InvalidRequest("purge a 'version' or 'instances', not both")
        if not isinstance(version, str) or len(version) > PurgeRecord._meta.get_field("version").max_length:
            raise InvalidRequest("'version' must be a string of at most 300 characters")
        return version, None, None
    if "instances" not in document:
        if "parameters" in document:
            raise InvalidRequest("'parameters' goes with 'instances'")
        return None, None, None
    if not isinstance(instances, list) or not instances:
        raise InvalidRequest("'instances' must be a non-empty list")
    if len(instances) > settings.PREDCACHE_MAX_INSTANCES:
        raise PayloadTooLarge(
            f"{len(instances)} instances sent, the limit is {settings.PREDCACHE_MAX_INSTANCES}"
        )
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidRequest("'parameters' must be an object")
    return None, instances, parameters


class PurgeRequest(schema.JsonBody):
    """What purge_request accepts: one of three shapes, never two at once."""

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        version = {
            "type": "string",
            "maxLength": PurgeRecord._meta.get_field("version").max_length,
            "description": "Purge only this version (deployedModelId, modelVersionId or both as D/V).",
        }
        return {
            "oneOf": [
                {
                    "title": "Whole model",
                    "description": "`{}` purges every cached prediction of the model.",
                    "type": "object",
                    "properties": {},
                    "additionalProperties": False,
                },
                {
                    "title": "One version",
                    "type": "object",
                    "properties": {"version": version},
                    "required": ["version"],
                    "additionalProperties": False,
                },
                {
                    "title": "Some instances",
                    "type": "object",
                    "properties": {
                        "instances": schema.instances_schema(
                            "Purge only these instances (their entries are deleted now)."
                        ),
                        "parameters": schema.parameters_schema("The parameters they were asked with."),
                    },
                    "required": ["instances"],
                    "additionalProperties": False,
                },
            ]
        }


class PurgeResponseSerializer(serializers.Serializer):
    model = serializers.CharField()
    scope = serializers.ChoiceField(choices=PurgeScope.choices)
    version = serializers.CharField(allow_null=True, help_text="The version purged (scope 'version').")
    instances = serializers.IntegerField(help_text="Instances named (scope 'instances').")
    entries_removed = serializers.IntegerField(
        allow_null=True, help_text="Entries that existed and were deleted (scope 'instances')."
    )
    purge_id = serializers.IntegerField(help_text="The purge record, in the admin's purge history.")


_PURGE_ERRORS = {
    **schema.errors(400, 401),
    403: schema.error_response(
        "permission_denied", "The API key may predict but not manage, or is limited to other models"
    ),
    **schema.errors(404, 405),
    409: schema.error_response(
        "version_not_served", "No entry of that version is served (retired, or never seen)"
    ),
    **schema.errors(411, 413, 415),
    503: schema.error_response("cache_unavailable", "Redis is unavailable; nothing was purged"),
}


class PurgeView(JsonApiView):
    """``POST /v1/admin/models/{model}:purge`` — purge a model, one version, or some instances."""

    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [IsAdminKeyOrStaff]

    @extend_schema(
        operation_id="admin_purge",
        summary="Purge cached predictions of a model, one of its versions, or some instances",
        description=(
            '`{}` purges the whole model and `{"version": V}` one version, at once; the memory of '
            'their entries is freed in the background. `{"instances": [...], "parameters": {...}}` '
            "deletes exactly the entries of those instances. Needs an API key created with "
            "`--admin` (or granted in the admin), or a staff session."
        ),
        parameters=[schema.MODEL_PARAMETER],
        request=schema.json_request(PurgeRequest),
        examples=[
            OpenApiExample("Whole model", value={}, request_only=True),
            OpenApiExample("One version", value={"version": "1234567890"}, request_only=True),
            OpenApiExample("Some instances", value={"instances": [[5.1, 3.5, 1.4, 0.2]]}, request_only=True),
        ],
        responses={
            200: OpenApiResponse(PurgeResponseSerializer, description="The purge done"),
            **_PURGE_ERRORS,
        },
        tags=["admin"],
    )
    def post(self, request: Request, model: str) -> Response:
        if isinstance(request.auth, VerifiedKey) and not request.auth.access.may_predict(model):
            raise ModelNotInScope.named(model, request.auth.access)
        if not _MODEL_NAME.fullmatch(model):
            raise ModelNotFound.named(model)
        version, instances, parameters = purge_request(read_json_body(request))
        endpoint = ModelEndpoint.objects.filter(name=model).first()
        if endpoint is None:
            raise ModelNotFound.named(model)
        try:
            if instances is None:
                outcome = model_cache_purge(
                    model=endpoint, model_version=version, requested_by=requester(request)
                )
            else:
                outcome = model_instances_purge(
                    model=endpoint,
                    instances=instances,
                    parameters=parameters,
                    requested_by=requester(request),
                )
        except CacheUnavailable:  # its own words name Redis's address: not for API clients
            raise CacheUnavailable("Redis is unavailable; nothing was purged") from None
        record = outcome.record
        if record is None:  # a retired version: its entries are already never served
            raise PurgeRefused(outcome.message)
        return Response(
            {
                "model": endpoint.name,
                "scope": record.scope,
                "version": record.version if record.scope == PurgeScope.VERSION else None,
                "instances": record.instances,
                "entries_removed": record.entries_removed,
                "purge_id": record.pk,
            }
        )
