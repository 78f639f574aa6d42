"""Warm sets (instances a model's cache is kept warm with) and the record of each warm run."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from caching.models.endpoints import ModelEndpoint
from caching.models.policies import validate_cron


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
