"""What happened and who may do what: purge records, version changes, key grants, the installation."""

from __future__ import annotations

import re
import secrets

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

from caching.core.ratelimit import PERIODS, Rate
from caching.models.endpoints import MODEL_NAME_PATTERN, ModelEndpoint

_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)


class PurgeScope(models.TextChoices):
    MODEL = "model", "whole model"
    VERSION = "version", "one version"
    INSTANCES = "instances", "specific instances"


class PurgeRecord(models.Model):
    """Every purge: who asked, when, what, and how many entries it made unreachable or freed."""

    model = models.ForeignKey(ModelEndpoint, on_delete=models.CASCADE, related_name="purges")
    scope = models.CharField(max_length=16, choices=PurgeScope.choices)
    version = models.CharField(max_length=300, blank=True)
    instances = models.PositiveIntegerField(default=0, help_text="Instances named (instance purges).")
    requested_by = models.CharField(max_length=200, help_text="User, API key or schedule.")
    requested_at = models.DateTimeField(auto_now_add=True, db_index=True)
    entries_removed = models.PositiveIntegerField(
        null=True, blank=True, help_text="Entries deleted at once (instance purges)."
    )
    entries_reclaimed = models.PositiveIntegerField(
        null=True, blank=True, help_text="Unreachable entries whose memory was freed in the background."
    )
    reclaimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]

    def __str__(self) -> str:
        return f"{self.model} {self.scope} purge by {self.requested_by}"


class ModelVersionChange(models.Model):
    """The cache of a model moved to another deployed model version, as the backend reported it."""

    model = models.ForeignKey(ModelEndpoint, on_delete=models.CASCADE, related_name="version_changes")
    previous_version = models.CharField(max_length=300, blank=True, help_text="Tag followed before.")
    version = models.CharField(
        max_length=300, help_text="Tag followed since: deployedModelId/modelVersionId."
    )
    model_version_id = models.CharField("model version ID", max_length=128, blank=True)
    deployed_model_id = models.CharField("deployed model ID", max_length=128, blank=True)
    observed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-observed_at", "-id"]
        get_latest_by = ["observed_at", "id"]

    def __str__(self) -> str:
        return f"{self.model}: {self.previous_version or '-'} -> {self.version}"


def validate_model_names(value: object) -> None:
    """A list of model names (any name a model could be registered as, registered or not)."""
    if not isinstance(value, list) or not all(
        isinstance(name, str) and _MODEL_NAME.fullmatch(name) for name in value
    ):
        raise ValidationError("A list of model names.")


class ApiKeyGrant(models.Model):
    """What an API key may do: the models it may predict on, how often, and the management API.

    Keys without a grant may predict on every model, without a rate limit, and not administer.
    """

    api_key = models.OneToOneField(
        "rest_framework_api_key.APIKey", on_delete=models.CASCADE, related_name="grant"
    )
    may_administer = models.BooleanField(
        default=False,
        help_text="May call the management API under /v1/admin/ (purges).",
    )
    # Names, not references: deleting a model never widens a scope to every model, and a
    # model registered again under a name keeps the keys that named it.
    model_names = models.JSONField(
        "models",
        default=list,
        blank=True,
        validators=[validate_model_names],
        help_text="The models this key may predict on (both predict routes); none chosen: every model.",
    )
    rate_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Requests this key may make per period on the predict routes, all processes together; "
        "empty: no limit.",
    )
    rate_period_seconds = models.PositiveIntegerField(
        "per",
        choices=[(seconds, name) for seconds, name in PERIODS.values()],
        default=60,
    )
    last_used_at = models.DateTimeField(
        "last used",
        null=True,
        blank=True,
        editable=False,
        help_text="The key's latest request, to the minute: each process records it at most once a minute.",
    )

    class Meta:
        verbose_name = "API key grant"

    def __str__(self) -> str:
        return f"grant of {self.api_key}"

    @property
    def scope(self) -> frozenset[str] | None:
        """The model names the key may predict on; None: every model."""
        return frozenset(self.model_names) if self.model_names else None

    @property
    def rate(self) -> Rate | None:
        return None if self.rate_limit is None else Rate(self.rate_limit, self.rate_period_seconds)


def new_installation_id() -> str:
    """48 random bits as 12 hex digits: distinct for every database that runs the migrations."""
    return secrets.token_hex(6)


class Installation(models.Model):
    """The one row naming this installation, so that installations sharing a Redis share no keys.

    Created by the migration that introduced it; every Redis key predcache writes carries its id
    (``PREDCACHE_INSTALLATION_ID`` overrides it, e.g. for a database cloned from another one).
    """

    SINGLETON = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON, editable=False)
    installation_id = models.CharField(
        max_length=32,
        default=new_installation_id,
        validators=[RegexValidator(r"^[0-9a-z]{1,32}$", "Lowercase letters and digits.")],
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"installation {self.installation_id}"
