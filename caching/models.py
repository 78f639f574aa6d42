"""Registered models and their cache policies, edited in the admin and by the CLI."""

from __future__ import annotations

import secrets
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


class CacheMode(models.TextChoices):
    CACHE = "cache", "cache: serve from the cache, store misses"
    BYPASS = "bypass", "bypass: every request goes to the model, counted in the stats"
    DISABLED = "disabled", "disabled: every request goes to the model; Redis is not touched"


class Compression(models.TextChoices):
    ZLIB = "zlib", "zlib"
    ZSTD = "zstd", "zstd"


def validate_cron(value: str) -> None:
    """A five-field cron expression (minute hour day-of-month month day-of-week)."""
    from celery.schedules import crontab

    fields = value.split()
    if len(fields) != 5:
        raise ValidationError("Five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *'.")
    minute, hour, day_of_month, month, day_of_week = fields
    from django_celery_beat.models import CrontabSchedule  # the schedule it becomes (see schedules)

    for name, text in zip(
        ("minute", "hour", "day_of_month", "month_of_year", "day_of_week"), fields, strict=True
    ):
        longest = CrontabSchedule._meta.get_field(name).max_length
        if longest is not None and len(text) > longest:
            raise ValidationError(f"The {name.replace('_', ' ')} field is longer than {longest} characters.")
    try:
        crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month,
            day_of_week=day_of_week,
        )
    except ValueError as exc:
        raise ValidationError(f"Not a valid cron expression: {exc}") from exc


def validate_field_names(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValidationError('A list of field names, e.g. ["request_id", "meta.trace"].')


class CachePolicy(models.Model):
    """How a model's predictions are cached, keyed and invalidated."""

    model = models.OneToOneField(ModelEndpoint, on_delete=models.CASCADE, related_name="policy")
    mode = models.CharField(max_length=16, choices=CacheMode.choices, default=CacheMode.CACHE)
    ttl_seconds = models.PositiveIntegerField(
        "TTL (seconds)",
        default=3600,
        validators=[MinValueValidator(1), MaxValueValidator(90 * 24 * 3600)],
        help_text="How long a stored prediction is served as fresh.",
    )
    ttl_jitter = models.FloatField(
        "TTL jitter",
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
        help_text="Fraction of the TTL by which each entry's lifetime is randomly shortened "
        "(0.1: between 90% and 100% of the TTL), so entries written together do not expire together.",
    )
    stale_while_revalidate_seconds = models.PositiveIntegerField(
        "stale-while-revalidate (seconds)",
        default=0,
        validators=[MaxValueValidator(7 * 24 * 3600)],
        help_text="For this long after its TTL an entry is still served at once, while one "
        "background call refreshes it.",
    )
    stale_if_error_seconds = models.PositiveIntegerField(
        "stale-if-error (seconds)",
        default=0,
        validators=[MaxValueValidator(30 * 24 * 3600)],
        help_text="If the model fails (or its breaker is open), serve an expired entry up to this "
        "long after its TTL, marked X-Cache: STALE.",
    )
    round_decimals = models.PositiveSmallIntegerField(
        "round to decimal places",
        null=True,
        blank=True,
        validators=[MaxValueValidator(15)],
        help_text="Key rule: round every number in an instance to this many decimal places "
        "before keying (the model still gets the original). Empty: no rounding.",
    )
    round_significant = models.PositiveSmallIntegerField(
        "round to significant digits",
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(17)],
        help_text="Key rule: round every number to this many significant digits before keying.",
    )
    ignore_fields = models.JSONField(
        "ignored fields",
        default=list,
        blank=True,
        validators=[validate_field_names],
        help_text='Key rule: object fields left out of the key, e.g. ["request_id", "meta.trace"] '
        "(dotted names reach into nested objects).",
    )
    admit_after = models.PositiveSmallIntegerField(
        "store after (requests)",
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Store an instance's prediction only once it has been requested this many times.",
    )
    max_entry_bytes = models.PositiveIntegerField(
        "largest stored prediction (bytes)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Larger predictions are served but not stored. Empty: no limit.",
    )
    compress_over_bytes = models.PositiveIntegerField(
        "compress above (bytes)",
        null=True,
        blank=True,
        default=4096,
        help_text="Compress stored predictions larger than this. Empty: never compress.",
    )
    compression = models.CharField(max_length=8, choices=Compression.choices, default=Compression.ZLIB)
    max_age_seconds = models.PositiveIntegerField(
        "max age (seconds)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Invalidation rule: entries older than this are never served, whatever their TTL.",
    )
    purge_schedule = models.CharField(
        "purge schedule (cron)",
        max_length=100,
        blank=True,
        validators=[validate_cron],
        help_text="Invalidation rule: purge the whole model on this cron schedule "
        "(minute hour day-of-month month day-of-week, UTC), e.g. '0 3 * * *'. Run by celery beat.",
    )
    warm_rate = models.PositiveIntegerField(
        "warm rate (instances per second)",
        null=True,
        blank=True,
        default=50,
        validators=[MinValueValidator(1)],
        help_text="Warming sends the model at most this many instances a second, so it never "
        "starves live traffic. Empty: as fast as the model answers.",
    )
    warm_batch_size = models.PositiveIntegerField(
        "warm batch size",
        default=100,
        validators=[MinValueValidator(1), MaxValueValidator(10_000)],
        help_text="Instances per backend call when warming.",
    )
    refresh_ahead_seconds = models.PositiveIntegerField(
        "refresh ahead (seconds)",
        default=0,
        validators=[MaxValueValidator(30 * 24 * 3600)],
        help_text="Refresh-ahead: popular entries that will expire within this window are "
        "recomputed before they do, so they never go cold; unpopular ones just expire. 0: off.",
    )

    class Meta:
        verbose_name_plural = "cache policies"

    def __str__(self) -> str:
        return f"cache policy of {self.model.name}"

    def clean(self) -> None:
        if self.round_decimals is not None and self.round_significant is not None:
            raise ValidationError("Round to decimal places or to significant digits, not both.")


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


class ApiKeyGrant(models.Model):
    """What an API key may do beyond predicting. Keys without a grant may only predict."""

    api_key = models.OneToOneField(
        "rest_framework_api_key.APIKey", on_delete=models.CASCADE, related_name="grant"
    )
    may_administer = models.BooleanField(
        default=False,
        help_text="May call the management API under /v1/admin/ (purges).",
    )

    class Meta:
        verbose_name = "API key grant"

    def __str__(self) -> str:
        return f"grant of {self.api_key}"


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


def validate_every_seconds(value: int) -> None:
    if value < 10:
        raise ValidationError("At least 10 seconds between runs.")


class WarmSet(models.Model):
    """Named instances (with their parameters) a model's cache is kept warm with, scheduled or on demand."""

    model = models.ForeignKey(ModelEndpoint, on_delete=models.CASCADE, related_name="warm_sets")
    name = models.SlugField(max_length=64, help_text="Letters, digits, '-' and '_'; unique per model.")
    parameters = models.JSONField(
        null=True, blank=True, help_text="The parameters every instance is asked with (part of the key)."
    )
    instances = models.JSONField(default=list, help_text="The instances, as clients send them.")
    instance_count = models.PositiveIntegerField(default=0, editable=False)
    every_seconds = models.PositiveIntegerField(
        "every (seconds)",
        null=True,
        blank=True,
        validators=[validate_every_seconds],
        help_text="Warm this set every this many seconds. Empty: not on an interval.",
    )
    cron = models.CharField(
        "schedule (cron)",
        max_length=100,
        blank=True,
        validators=[validate_cron],
        help_text="Warm this set on this cron schedule (UTC), e.g. '30 5 * * *'. Not with an interval.",
    )
    created_at = models.DateTimeField("created", auto_now_add=True)
    updated_at = models.DateTimeField("updated", auto_now=True)

    class Meta:
        ordering = ["model__name", "name"]
        constraints = [models.UniqueConstraint(fields=["model", "name"], name="one_warm_set_name_per_model")]

    def __str__(self) -> str:
        return f"{self.model.name}/{self.name}"

    def clean(self) -> None:
        if self.every_seconds and self.cron:
            raise ValidationError("Warm on an interval or on a cron schedule, not both.")
        if self.parameters is not None and not isinstance(self.parameters, dict):
            raise ValidationError({"parameters": "A JSON object, or empty."})

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.instance_count = len(self.instances or [])
        super().save(*args, **kwargs)


class WarmRunStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    FINISHED = "finished", "finished"
    FAILED = "failed", "failed"


class WarmRun(models.Model):
    """One warm of a model: what it set out to do, how far it got, and what it found."""

    model = models.ForeignKey(ModelEndpoint, on_delete=models.CASCADE, related_name="warm_runs")
    warm_set = models.ForeignKey(
        WarmSet, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    source = models.CharField(max_length=200, help_text="The warm set, file or hot set warmed.")
    requested_by = models.CharField(max_length=200, help_text="User, API key, schedule or CLI.")
    task_id = models.CharField(max_length=64, blank=True, db_index=True, help_text="The Celery task, if any.")
    status = models.CharField(max_length=16, choices=WarmRunStatus.choices, default=WarmRunStatus.QUEUED)
    queued_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    total = models.PositiveIntegerField(default=0, help_text="Instances to warm.")
    done = models.PositiveIntegerField(default=0, help_text="Instances looked at so far.")
    computed = models.PositiveIntegerField(default=0, help_text="Missing or close to expiry: computed.")
    already_cached = models.PositiveIntegerField(default=0, help_text="Fresh enough already: left alone.")
    errors = models.PositiveIntegerField(default=0, help_text="Instances the model failed or refused.")
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Times a worker started it (more than one: a worker was lost mid-run)."
    )
    message = models.TextField(blank=True, help_text="The last error, or why the run stopped.")

    class Meta:
        ordering = ["-queued_at", "-id"]

    def __str__(self) -> str:
        return f"warm of {self.source} ({self.status})"
