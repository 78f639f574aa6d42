"""Admin: models with their cache policy inline, and a purge action."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from caching.core.store import CacheUnavailable
from caching.models import CachePolicy, ModelEndpoint
from caching.services import model_cache_purge


class CachePolicyInline(admin.StackedInline):
    model = CachePolicy
    can_delete = False
    min_num = 1
    max_num = 1


@admin.register(ModelEndpoint)
class ModelEndpointAdmin(admin.ModelAdmin):
    list_display = ("name", "backend", "target", "model_version", "cache_enabled", "ttl", "updated_at")
    list_filter = ("backend",)
    search_fields = ("name", "target")
    readonly_fields = ("created_at", "updated_at")
    inlines = [CachePolicyInline]
    actions = ["purge_cache"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelEndpoint]:
        return super().get_queryset(request).select_related("policy")

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
