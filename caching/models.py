"""Registered models and their cache policies, edited in the admin and by the CLI."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from caching.backends import build_backend
from caching.backends.base import Backend, BackendConfigError

MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"


class BackendKind(models.TextChoices):
    LOCAL = "local", "Local model file (joblib)"
    HTTP = "http", "HTTP JSON prediction server"
    VERTEX = "vertex", "Google Vertex AI endpoint"


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
        help_text="Used in the URL: POST /v1/models/<name>:predict.",
    )
    backend = models.CharField(max_length=16, choices=BackendKind.choices)
    target = models.CharField(
        max_length=1024,
        help_text=(
            "local: a joblib file under PREDCACHE_MODEL_DIR; http: the URL of a predict endpoint; "
            "vertex: projects/P/locations/L/endpoints/E."
        ),
    )
    api_endpoint = models.CharField(
        max_length=512,
        blank=True,
        help_text="vertex: replaces the regional host L-aiplatform.googleapis.com (a private endpoint).",
    )
    timeout_seconds = models.FloatField(
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
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

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

    def backend_adapter(self) -> Backend:
        """Build the adapter that calls this model's server; raises BackendConfigError."""
        return build_backend(
            self.backend,
            self.target,
            timeout_seconds=self.timeout_seconds,
            options=self.options or {},
            model_dir=settings.PREDCACHE_MODEL_DIR,
            api_endpoint=self.api_endpoint,
        )


class CachePolicy(models.Model):
    """How a model's predictions are cached."""

    model = models.OneToOneField(ModelEndpoint, on_delete=models.CASCADE, related_name="policy")
    enabled = models.BooleanField(
        default=True, help_text="Off: every request goes to the backend and nothing is stored."
    )
    ttl_seconds = models.PositiveIntegerField(
        default=3600,
        validators=[MinValueValidator(1), MaxValueValidator(90 * 24 * 3600)],
        help_text="How long a stored prediction is served.",
    )

    class Meta:
        verbose_name_plural = "cache policies"

    def __str__(self) -> str:
        return f"cache policy of {self.model.name}"


class ModelVersionChange(models.Model):
    """The cache of a model moved to another deployed model version, as the backend reported it."""

    model = models.ForeignKey(ModelEndpoint, on_delete=models.CASCADE, related_name="version_changes")
    previous_version = models.CharField(max_length=300, blank=True, help_text="Tag followed before.")
    version = models.CharField(
        max_length=300, help_text="Tag followed since: deployedModelId/modelVersionId."
    )
    model_version_id = models.CharField(max_length=128, blank=True)
    deployed_model_id = models.CharField(max_length=128, blank=True)
    observed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-observed_at", "-id"]
        get_latest_by = ["observed_at", "id"]

    def __str__(self) -> str:
        return f"{self.model}: {self.previous_version or '-'} -> {self.version}"
