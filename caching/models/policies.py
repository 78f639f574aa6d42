"""How each model's predictions are cached, keyed, invalidated and warmed: its cache policy."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from caching.models.endpoints import ModelEndpoint


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
    l1 = models.BooleanField(
        "in-process tier (L1)",
        default=False,
        help_text="Each web process keeps the model's recent entries in memory and answers repeated "
        "instances with no Redis round trip; Redis tells every process at once when an entry "
        "changes or is purged (client-side caching), and the tier serves nothing while it cannot.",
    )

    class Meta:
        verbose_name_plural = "cache policies"

    def __str__(self) -> str:
        return f"cache policy of {self.model.name}"

    def clean(self) -> None:
        if self.round_decimals is not None and self.round_significant is not None:
            raise ValidationError("Round to decimal places or to significant digits, not both.")
