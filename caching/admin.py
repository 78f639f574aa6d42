"""Admin: models with their cache policy inline, a purge action, the purge history and recent warm runs.

Warm sets and warm runs have their admin in :mod:`caching.admin_warming`, API keys theirs in
:mod:`caching.admin_keys`; both are registered on import.
"""

from __future__ import annotations

import orjson
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Count, Max, OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from caching import admin_keys  # noqa: F401  (registers the API key admin)
from caching.admin_display import (
    backend_label,
    compact_time,
    counted,
    purge_history_url,
    purge_summary_row,
    target_label,
)
from caching.admin_warming import model_warm_runs
from caching.core.store import CacheUnavailable
from caching.models import CachePolicy, ModelEndpoint, ModelVersionChange, PurgeRecord
from caching.services import HotWarmSets, hot_set_warm_sets_save, model_cache_purge

# The navigation sidebar repeats the index page's few links and takes 300px of a 1366px laptop
# screen, which the model list needs for its columns beside the filter.
admin.site.enable_nav_sidebar = False


class CachePolicyInline(admin.StackedInline):
    """The model's one cache policy, edited on the model's page under a plain "Cache policy" heading."""

    model = CachePolicy
    can_delete = False
    min_num = 1
    max_num = 1
    # Django's stacked inline titles each form "Cache policy: cache policy of NAME" (or "#1").
    template = "admin/caching/edit_inline/single_stacked.html"


class VersionChangeInline(admin.TabularInline):
    """The deployed model versions the cache followed, newest first (read-only history)."""

    model = ModelVersionChange
    extra = 0
    max_num = 0
    can_delete = False
    fields = ("observed_at", "previous_version", "version", "model_version_id", "deployed_model_id")
    readonly_fields = fields
    ordering = ("-observed_at", "-id")
    verbose_name_plural = "version changes seen by the cache"

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ModelVersionChange)
class ModelVersionChangeAdmin(admin.ModelAdmin):
    list_display = ("observed_at", "model", "previous_version", "version")
    list_filter = ("model",)
    date_hierarchy = "observed_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(PurgeRecord)
class PurgeRecordAdmin(admin.ModelAdmin):
    """Every purge, read-only: who asked, what, and how many entries it removed or freed."""

    list_display = (
        "requested_at",
        "model",
        "scope",
        "version",
        "instances",
        "requested_by",
        "entries_removed",
        "entries_reclaimed",
        "reclaimed_at",
    )
    list_filter = ("scope", "model", "requested_at")
    list_select_related = ("model",)
    search_fields = ("model__name", "requested_by", "version")
    date_hierarchy = "requested_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ModelEndpoint)
class ModelEndpointAdmin(admin.ModelAdmin):
    """Models with their cache policy; the list fits a laptop screen, purges ask before they act."""

    list_display = (
        "name",
        "backend_kind",
        "short_target",
        "model_version",
        "followed_version",
        "cache_mode",
        "ttl",
        "updated",
    )
    list_filter = ("backend",)
    search_fields = ("name", "target")
    readonly_fields = ("created_at", "updated_at", "purge_history", "warm_runs")
    inlines = [CachePolicyInline, VersionChangeInline]
    actions = ["purge_cache", "hot_set_to_warm_sets"]
    purge_confirmation_template = "admin/caching/modelendpoint/purge_confirmation.html"

    class Media:
        css = {"all": ["caching/admin.css"]}

    def get_inlines(
        self, request: HttpRequest, obj: ModelEndpoint | None
    ) -> list[type[admin.options.InlineModelAdmin]]:
        # A new model has no history yet; showing the empty inline would only add a formset.
        return [CachePolicyInline] if obj is None else [CachePolicyInline, VersionChangeInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelEndpoint]:
        latest = ModelVersionChange.objects.filter(model=OuterRef("pk")).order_by("-observed_at", "-id")
        return (
            super()
            .get_queryset(request)
            .select_related("policy")
            .annotate(latest_version=Subquery(latest.values("version")[:1]))
        )

    @admin.display(description="backend", ordering="backend")
    def backend_kind(self, obj: ModelEndpoint) -> SafeString:
        return backend_label(obj)

    @admin.display(description="target", ordering="target")
    def short_target(self, obj: ModelEndpoint) -> SafeString:
        return target_label(obj.target)

    @admin.display(description="version followed")
    def followed_version(self, obj: ModelEndpoint) -> str:
        return getattr(obj, "latest_version", None) or "-"

    @admin.display(description="mode")
    def cache_mode(self, obj: ModelEndpoint) -> str:
        policy = getattr(obj, "policy", None)
        return "cache" if policy is None else policy.mode

    @admin.display(description="TTL (s)", ordering="policy__ttl_seconds")
    def ttl(self, obj: ModelEndpoint) -> int | None:
        policy = getattr(obj, "policy", None)
        return None if policy is None else policy.ttl_seconds

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: ModelEndpoint) -> SafeString:
        return compact_time(obj.updated_at)

    @admin.display(description="recent warm runs")
    def warm_runs(self, obj: ModelEndpoint) -> SafeString:
        return format_html("{}", "-") if obj.pk is None else model_warm_runs(obj)

    @admin.display(description="purges")
    def purge_history(self, obj: ModelEndpoint) -> str:
        if obj.pk is None:
            return "-"
        return format_html('<a href="{}">{} recorded</a>', purge_history_url(obj), obj.purges.count())

    @admin.action(description="Purge cached predictions of the selected models", permissions=["change"])
    def purge_cache(self, request: HttpRequest, queryset: QuerySet[ModelEndpoint]) -> TemplateResponse | None:
        # Like Django's delete_selected: the changelist's POST shows what would be purged, and
        # only the confirmation form's POST (post=yes, same CSRF and permission checks) purges.
        if request.POST.get("post") == "yes":
            self._purge(request, queryset)
            return None
        return self._purge_confirmation(request, queryset)

    def _purge_confirmation(
        self, request: HttpRequest, queryset: QuerySet[ModelEndpoint]
    ) -> TemplateResponse:
        models = list(
            queryset.annotate(purge_count=Count("purges"), last_purged_at=Max("purges__requested_at"))
        )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Purge the cached predictions of {counted(len(models), 'model')}?",
            "subtitle": None,
            "opts": self.model._meta,
            "rows": [purge_summary_row(model) for model in models],
            "action_name": "purge_cache",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "cancel_url": request.get_full_path(),
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.purge_confirmation_template, context)

    def _purge(self, request: HttpRequest, queryset: QuerySet[ModelEndpoint]) -> None:
        purged = []
        for model in queryset:
            try:
                model_cache_purge(model=model, requested_by=request.user.get_username())
            except CacheUnavailable as exc:
                self.message_user(
                    request, f"Redis unavailable, {model.name} not purged: {exc}", messages.ERROR
                )
                continue
            purged.append(model.name)
        if purged:
            self.message_user(
                request,
                f"Purged the cached predictions of {counted(len(purged), 'model')}: {', '.join(purged)}.",
                messages.SUCCESS,
            )

    @admin.action(description="Turn the hot set into a warm set", permissions=["change"])
    def hot_set_to_warm_sets(self, request: HttpRequest, queryset: QuerySet[ModelEndpoint]) -> None:
        # Nothing is lost by acting at once (only warm sets named hot* get new instances), so no
        # confirmation page: the message says exactly what was saved.
        for model in queryset:
            try:
                outcome = hot_set_warm_sets_save(model=model)
            except CacheUnavailable as exc:
                self.message_user(
                    request, f"Redis unavailable, {model.name} unchanged: {exc}", messages.ERROR
                )
                continue
            if not outcome.saved:
                self.message_user(
                    request,
                    f"No hot set for {model.name} yet: no sampled hits (PREDCACHE_HOT_SAMPLE_RATE) "
                    "in the last 7 days.",
                    messages.WARNING,
                )
                continue
            self.message_user(request, hot_warm_sets_message(model, outcome), messages.SUCCESS)


def hot_warm_sets_message(model: ModelEndpoint, outcome: HotWarmSets) -> str:
    """What the hot-set action saved: each warm set, created or replaced, its size and parameters."""
    parts = []
    for warm_set, created in outcome.saved:
        given = (
            "no parameters"
            if warm_set.parameters is None
            else f"parameters {orjson.dumps(warm_set.parameters).decode()}"
        )
        parts.append(
            f"warm set {warm_set.name!r} {'created' if created else 'replaced'} with "
            f"{counted(warm_set.instance_count, 'hot instance')} ({given})"
        )
    if outcome.left_out:
        parts.append(f"{counted(outcome.left_out, 'hot instance')} with other parameters left out")
    # The admin capitalizes a message's first letter: a model's name (case matters) comes later.
    return f"Hot set of {model.name} saved: {'; '.join(parts)}."
