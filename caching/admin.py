"""Admin: models with their cache policy inline, and a purge action."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest

from caching.core.store import CacheUnavailable
from caching.models import CachePolicy, ModelEndpoint, ModelVersionChange
from caching.services import model_cache_purge


class CachePolicyInline(admin.StackedInline):
    model = CachePolicy
    can_delete = False
    min_num = 1
    max_num = 1


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


@admin.register(ModelEndpoint)
class ModelEndpointAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "backend",
        "target",
        "model_version",
        "followed_version",
        "cache_enabled",
        "ttl",
        "updated_at",
    )
    list_filter = ("backend",)
    search_fields = ("name", "target")
    readonly_fields = ("created_at", "updated_at")
    inlines = [CachePolicyInline, VersionChangeInline]

    def get_inlines(
        self, request: HttpRequest, obj: ModelEndpoint | None
    ) -> list[type[admin.options.InlineModelAdmin]]:
        # A new model has no history yet; showing the empty inline would only add a formset.
        return [CachePolicyInline] if obj is None else [CachePolicyInline, VersionChangeInline]

    actions = ["purge_cache"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelEndpoint]:
        latest = ModelVersionChange.objects.filter(model=OuterRef("pk")).order_by("-observed_at", "-id")
        return (
            super()
            .get_queryset(request)
            .select_related("policy")
            .annotate(latest_version=Subquery(latest.values("version")[:1]))
        )

    @admin.display(description="version followed")
    def followed_version(self, obj: ModelEndpoint) -> str:
        return getattr(obj, "latest_version", None) or "-"

    @admin.display(boolean=True, description="cache on")
    def cache_enabled(self, obj: ModelEndpoint) -> bool:
        return getattr(obj, "policy", None) is None or obj.policy.enabled

    @admin.display(description="TTL (s)")
    def ttl(self, obj: ModelEndpoint) -> int | None:
        policy = getattr(obj, "policy", None)
        return None if policy is None else policy.ttl_seconds

    @admin.action(description="Purge cached predictions of the selected models")
    def purge_cache(self, request: HttpRequest, queryset: QuerySet[ModelEndpoint]) -> None:
        purged = []
        for model in queryset:
            try:
                model_cache_purge(model=model)
            except CacheUnavailable as exc:
                self.message_user(
                    request, f"Redis unavailable, {model.name} not purged: {exc}", messages.ERROR
                )
                continue
            purged.append(model.name)
        if purged:
            self.message_user(request, f"Purged: {', '.join(purged)}", messages.SUCCESS)
