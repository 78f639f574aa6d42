"""Registering models and their cache policies."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from caching.models import CachePolicy, ModelEndpoint

# Passed to model_upsert for a nullable policy field: set it to empty (None keeps the value).
CLEAR: Any = object()


@transaction.atomic
def model_upsert(
    *,
    name: str,
    backend: str | None = None,
    target: str | None = None,
    api_endpoint: str | None = None,
    timeout_seconds: float | None = None,
    model_version: str | None = None,
    options: dict[str, Any] | None = None,
    **policy_fields: Any,
) -> tuple[ModelEndpoint, bool]:
    """Create or update a model and its policy; arguments left as ``None`` keep their value.

    ``backend`` and ``target`` are needed only to create a model. ``policy_fields`` holds
    :class:`CachePolicy` fields (``ttl_seconds=60``, ``mode="bypass"``...). Raises
    ValidationError for invalid values, and changes nothing then.
    """
    unknown = set(policy_fields) - {field.name for field in CachePolicy._meta.get_fields()} - {"model", "id"}
    if unknown:
        raise TypeError(f"unknown policy field(s): {', '.join(sorted(unknown))}")
    model = ModelEndpoint.objects.filter(name=name).first()
    created = model is None
    if model is None:
        if backend is None or target is None:
            raise ValidationError(f"{name!r} is a new model: give its backend and target")
        model = ModelEndpoint(name=name)
    for field, value in (
        ("backend", backend),
        ("target", target),
        ("api_endpoint", api_endpoint),
        ("timeout_seconds", timeout_seconds),
        ("model_version", model_version),
        ("options", options),
    ):
        if value is not None:
            setattr(model, field, value)
    model.full_clean()
    model.save()
    policy_row = CachePolicy.objects.filter(model=model).first() or CachePolicy(model=model)
    for field, value in policy_fields.items():
        if value is not None:
            setattr(policy_row, field, None if value is CLEAR else value)
    policy_row.full_clean()
    policy_row.save()
    return model, created
