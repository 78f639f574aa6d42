"""The models predcache answers for: a name in the URL and the server that computes it."""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from caching.backends import BuildContext, backend_choices, build_backend
from caching.backends.base import Backend, BackendConfigError

MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"


class ModelEndpoint(models.Model):
    """A model predcache answers for: its name in the URL and the server that computes it."""

    name = models.CharField(
        max_length=128,
        unique=True,
        validators=[
            RegexValidator(
                f"^{MODEL_NAME_PATTERN}$",
                "Letters, digits, '.', '_' and '-', starting with a letter or digit.",
            )
        ],
        help_text="Clients call POST /v1/models/NAME:predict with this name as NAME.",
    )
    backend = models.CharField(max_length=16, choices=backend_choices())
    target = models.CharField(
        max_length=1024,
        help_text=(
            "local: a joblib file under PREDCACHE_MODEL_DIR; http: the URL of a predict endpoint; "
            "vertex: projects/P/locations/L/endpoints/E."
        ),
    )
    api_endpoint = models.CharField(
        "API endpoint",
        max_length=512,
        blank=True,
        help_text="vertex: replaces the regional host L-aiplatform.googleapis.com (a private endpoint).",
    )
    timeout_seconds = models.FloatField(
        "timeout (seconds)",
        default=30.0,
        validators=[MinValueValidator(0.05), MaxValueValidator(600)],
        help_text="How long one backend call may take before the client gets a 504.",
    )
    model_version = models.CharField(
        max_length=128,
        blank=True,
        help_text=(
            "Empty: the cache follows the version the backend reports and moves when it changes. "
            "Set: pins the cache to this version (modelVersionId or deployedModelId); answers of "
            "other versions are passed through, not stored. For backends that report no version "
            "it is a label in every cache key: change it and the cache starts afresh."
        ),
    )
    options = models.JSONField(
        default=dict, blank=True, help_text='Backend options, e.g. {"method": "predict_proba"}.'
    )
    created_at = models.DateTimeField("created", auto_now_add=True)
    updated_at = models.DateTimeField("updated", auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "model"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        try:
            self.backend_adapter().verify()
        except BackendConfigError as exc:
            raise ValidationError({"target": str(exc)}) from exc

    def backend_adapter(self, context: BuildContext | None = None) -> Backend:
        """Build the adapter that calls this model's server; raises BackendConfigError.

        ``context`` holds the process's shared resources (the runtime's); without one, the
        adapter has its own (the admin and the CLI checking settings).
        """
        return build_backend(
            self.backend,
            self.target,
            timeout_seconds=self.timeout_seconds,
            options=self.options or {},
            context=context or BuildContext(model_dir=settings.PREDCACHE_MODEL_DIR),
            api_endpoint=self.api_endpoint,
        )

    def backend_settings(self) -> tuple[Any, ...]:
        """Everything the adapter is built from, hashable: one adapter per distinct value."""
        options = orjson.dumps(self.options or {}, option=orjson.OPT_SORT_KEYS)
        return (self.backend, self.target, self.timeout_seconds, options, self.api_endpoint)
