"""Admin: models with their cache policy inline, a purge action, and the purge history."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from caching.core.store import CacheUnavailable
from caching.models import ApiKeyGrant, CachePolicy, ModelEndpoint, ModelVersionChange, PurgeRecord
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
    list_display = (
        "name",
        "backend",
        "target",
        "model_version",
        "followed_version",
        "cache_mode",
        "ttl",
        "updated_at",
    )
    list_filter = ("backend",)
    search_fields = ("name", "target")
    readonly_fields = ("created_at", "updated_at", "purge_history")
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

    @admin.display(description="mode")
    def cache_mode(self, obj: ModelEndpoint) -> str:
        policy = getattr(obj, "policy", None)
        return "cache" if policy is None else policy.mode

    @admin.display(description="TTL (s)")
    def ttl(self, obj: ModelEndpoint) -> int | None:
        policy = getattr(obj, "policy", None)
        return None if policy is None else policy.ttl_seconds

    @admin.display(description="purges")
    def purge_history(self, obj: ModelEndpoint) -> str:
        if obj.pk is None:
            return "-"
        url = f"{reverse('admin:caching_purgerecord_changelist')}?model__id__exact={obj.pk}"
        return format_html('<a href="{}">{} recorded</a>', url, obj.purges.count())

    @admin.action(description="Purge cached predictions of the selected models")
    def purge_cache(self, request: HttpRequest, queryset: QuerySet[ModelEndpoint]) -> None:
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
            self.message_user(request, f"Purged: {', '.join(purged)}", messages.SUCCESS)


class ApiKeyGrantInline(admin.StackedInline):
    model = ApiKeyGrant
    can_delete = False
    max_num = 1
    verbose_name_plural = "what this key may do besides predicting"


# The API key admin of djangorestframework-api-key, with the key's grant on the same page.
admin.site.unregister(APIKey)


@admin.register(APIKey)
class GrantedApiKeyAdmin(APIKeyModelAdmin):
    inlines = [ApiKeyGrantInline]
