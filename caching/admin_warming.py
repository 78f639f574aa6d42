"""Admin of warming: warm sets uploaded as JSONL or CSV, a "Warm now" action, and the runs to watch.

Registered when :mod:`caching.admin` imports it (for the model page's recent warm runs).
"""

from __future__ import annotations

from typing import Any

import orjson
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.core.validators import FileExtensionValidator
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from caching.admin_display import compact_time, counted
from caching.core.store import CacheUnavailable
from caching.models import ModelEndpoint, WarmRun, WarmSet
from caching.selectors import warm_runs_recent
from caching.services.warm_sets import (
    ERRORS_SHOWN,
    FILE_MAX_BYTES,
    WarmFileInvalid,
    warm_file_parse,
    warm_parameters_check,
)
from caching.services.warming import WarmNotQueued, warm_set_enqueue

WARM_FILE_HELP = (
    "JSON Lines (.jsonl): one JSON instance a line, blank lines skipped. CSV (.csv): a header row "
    "naming the fields, then one instance a row; a cell written as a JSON number is a number, an "
    "empty cell is null, anything else is text. A file with a bad line stores nothing."
)
RUNS_SHOWN = 10  # on a model's or a warm set's page; the rest are in the warm runs list


def warm_runs_table(runs: list[WarmRun], *, all_runs_url: str) -> SafeString:
    """Recent warm runs as a table: status, progress, what they found, when."""
    if not runs:
        return format_html("{}", "no warm runs yet")
    rows = [
        {
            "run": run,
            "queued": compact_time(run.queued_at),
            "started": compact_time(run.started_at),
            "finished": compact_time(run.finished_at),
        }
        for run in runs
    ]
    return render_to_string("admin/caching/warm_runs.html", {"rows": rows, "all_runs_url": all_runs_url})


def warm_runs_url(**filters: Any) -> str:
    """The warm runs list in the admin, filtered (``model__id__exact=3``)."""
    query = "&".join(f"{name}={value}" for name, value in filters.items())
    return f"{reverse('admin:caching_warmrun_changelist')}?{query}"


def model_warm_runs(model: ModelEndpoint) -> SafeString:
    """The model page's section: its recent warm runs."""
    return warm_runs_table(
        warm_runs_recent(model=model, limit=RUNS_SHOWN), all_runs_url=warm_runs_url(model__id__exact=model.pk)
    )


class WarmSetForm(forms.ModelForm):
    """A warm set with its instances uploaded as a file, checked line by line before anything is stored."""

    file = forms.FileField(
        label="instances file",
        required=False,
        validators=[FileExtensionValidator(["jsonl", "ndjson", "csv"])],
        help_text=WARM_FILE_HELP,
    )

    class Meta:
        model = WarmSet
        fields = ["model", "name", "file", "parameters", "every_seconds", "cron"]

    def clean_parameters(self) -> Any:
        parameters = self.cleaned_data.get("parameters")
        warm_parameters_check(parameters)
        return parameters

    def clean_file(self) -> Any:
        upload = self.cleaned_data.get("file")
        if upload is None:
            if self.instance.pk is None:
                raise ValidationError("Upload the instances: a .jsonl or .csv file.")
            return None  # a change that keeps the instances it has
        if upload.size > FILE_MAX_BYTES:  # refused before it is read into memory
            raise ValidationError(f"{upload.name}: larger than {FILE_MAX_BYTES // 2**20} MiB: split the file")
        try:
            self.instance.instances = warm_file_parse(data=upload.read(), name=upload.name)
        except WarmFileInvalid as exc:
            shown = [str(error) for error in exc.errors[:ERRORS_SHOWN]]
            if len(exc.errors) > ERRORS_SHOWN:
                shown.append(f"and {len(exc.errors) - ERRORS_SHOWN} more bad lines")
            raise ValidationError([f"{upload.name}: {line}" for line in shown]) from exc
        return upload


@admin.register(WarmSet)
class WarmSetAdmin(admin.ModelAdmin):
    """Warm sets: uploaded from a file, scheduled, warmed now; each with its last run."""

    form = WarmSetForm
    list_display = ("name", "model", "instance_count", "schedule", "last_run", "last_run_status", "progress")
    list_filter = ("model",)
    list_select_related = ("model",)
    search_fields = ("name", "model__name")
    readonly_fields = ("instance_count", "first_instances", "recent_runs", "created_at", "updated_at")
    actions = ["warm_now"]

    class Media:
        css = {"all": ["caching/admin.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[WarmSet]:
        newest = WarmRun.objects.filter(warm_set=OuterRef("pk")).order_by("-queued_at", "-id")
        fields = {f"last_{name}": Subquery(newest.values(name)[:1]) for name in _LAST_RUN_FIELDS}
        # The instances (up to 128 MiB a set) are read only where a page needs them.
        return super().get_queryset(request).defer("instances").annotate(**fields)

    def get_readonly_fields(self, request: HttpRequest, obj: WarmSet | None = None) -> Any:
        # A new set has nothing to show yet but the form.
        return () if obj is None else self.readonly_fields

    @admin.display(description="schedule")
    def schedule(self, obj: WarmSet) -> str:
        if obj.every_seconds:
            return f"every {obj.every_seconds} s"
        return f"cron {obj.cron}" if obj.cron else "on demand"

    @admin.display(description="last run")
    def last_run(self, obj: WarmSet) -> SafeString:
        return compact_time(getattr(obj, "last_queued_at", None))

    @admin.display(description="status")
    def last_run_status(self, obj: WarmSet) -> str:
        return getattr(obj, "last_status", None) or "-"

    @admin.display(description="done")
    def progress(self, obj: WarmSet) -> str:
        if getattr(obj, "last_status", None) is None:
            return "-"
        done = f"{obj.last_done:,}/{obj.last_total:,}"
        return f"{done} ({obj.last_computed:,} computed, {obj.last_errors:,} errors)"

    @admin.display(description="first instances")
    def first_instances(self, obj: WarmSet) -> SafeString:
        shown = [orjson.dumps(instance).decode() for instance in (obj.instances or [])[:5]]
        return format_html("<code>{}</code>", "\n".join(shown) or "-")

    @admin.display(description="recent runs")
    def recent_runs(self, obj: WarmSet) -> SafeString:
        runs = list(obj.runs.order_by("-queued_at", "-id")[:RUNS_SHOWN])
        return warm_runs_table(runs, all_runs_url=warm_runs_url(warm_set__id__exact=obj.pk))

    @admin.action(description="Warm now", permissions=["change"])
    def warm_now(self, request: HttpRequest, queryset: QuerySet[WarmSet]) -> None:
        queued = []
        for warm_set in queryset.select_related("model"):
            try:
                warm_set_enqueue(warm_set=warm_set, requested_by=request.user.get_username())
            except (WarmNotQueued, CacheUnavailable) as exc:
                self.message_user(request, f"{warm_set} not queued: {exc}", messages.ERROR)
                continue
            queued.append(str(warm_set))
        if queued:
            self.message_user(
                request,
                f"Queued a warm of {counted(len(queued), 'warm set')}: {', '.join(queued)}. "
                "Their progress is on each model's page and in the warm runs.",
                messages.SUCCESS,
            )


_LAST_RUN_FIELDS = ("queued_at", "status", "done", "total", "computed", "errors")


@admin.register(WarmRun)
class WarmRunAdmin(admin.ModelAdmin):
    """Every warm run, read-only: what it set out to do, how far it got, what it found."""

    list_display = (
        "queued_at",
        "model",
        "source",
        "status",
        "progress",
        "computed",
        "already_cached",
        "errors",
        "started_at",
        "finished_at",
        "requested_by",
    )
    list_filter = ("status", "model", "warm_set")
    list_select_related = ("model",)
    search_fields = ("model__name", "source", "requested_by", "task_id")
    date_hierarchy = "queued_at"

    class Media:
        css = {"all": ["caching/admin.css"]}

    @admin.display(description="done")
    def progress(self, obj: WarmRun) -> SafeString:
        return format_html(
            '<progress value="{}" max="{}"></progress> {}/{}', obj.done, obj.total or 1, obj.done, obj.total
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
