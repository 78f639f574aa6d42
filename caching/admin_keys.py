"""Admin of API keys: what each key may do (models, rate, management), its last use, a revoke action.

Registered when :mod:`caching.admin` imports it, replacing djangorestframework-api-key's own.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from caching.admin_display import compact_time, counted
from caching.models import ApiKeyGrant, ModelEndpoint
from caching.services import api_key_revoke


class ApiKeyGrantForm(forms.ModelForm):
    """The grant, its models chosen among the registered ones (and any no longer registered it names)."""

    model_names = forms.MultipleChoiceField(
        label="Models",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=ApiKeyGrant._meta.get_field("model_names").help_text,
    )

    class Meta:
        model = ApiKeyGrant
        fields = ("may_administer", "model_names", "rate_limit", "rate_period_seconds")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        registered = list(ModelEndpoint.objects.order_by("name").values_list("name", flat=True))
        gone = sorted(set(self.instance.model_names or ()) - set(registered))
        self.fields["model_names"].choices = [(name, name) for name in registered] + [
            (name, f"{name} (not registered)") for name in gone
        ]


class ApiKeyGrantInline(admin.StackedInline):
    """The key's one grant, under a plain heading: edits reach other processes within seconds."""

    model = ApiKeyGrant
    form = ApiKeyGrantForm
    can_delete = False
    max_num = 1
    fields = ("may_administer", "model_names", ("rate_limit", "rate_period_seconds"), "last_used_at")
    readonly_fields = ("last_used_at",)
    verbose_name = "what this key may do"
    verbose_name_plural = "what this key may do"
    template = "admin/caching/edit_inline/single_stacked.html"


admin.site.unregister(APIKey)


@admin.register(APIKey)
class GrantedApiKeyAdmin(APIKeyModelAdmin):
    """djangorestframework-api-key's admin (expiry, revoked), with the grant and the last use."""

    inlines = [ApiKeyGrantInline]
    list_display = (
        "prefix",
        "name",
        "created",
        "expiry_date",
        "_has_expired",
        "revoked",
        "models",
        "rate",
        "last_used",
    )
    list_filter = ("created", "revoked")
    list_select_related = ("grant",)
    actions = ["revoke_keys"]

    @admin.display(description="models")
    def models(self, api_key: APIKey) -> str:
        grant = getattr(api_key, "grant", None)
        return ", ".join(grant.model_names) if grant is not None and grant.model_names else "all"

    @admin.display(description="rate")
    def rate(self, api_key: APIKey) -> str:
        grant = getattr(api_key, "grant", None)
        rate = None if grant is None else grant.rate
        return "-" if rate is None else str(rate)

    @admin.display(description="last used", ordering="grant__last_used_at")
    def last_used(self, api_key: APIKey) -> SafeString:
        grant = getattr(api_key, "grant", None)
        return compact_time(None if grant is None else grant.last_used_at)

    @admin.action(description="Revoke the selected API keys (for good)", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        # One at a time through the service: each save tells this process to forget the key.
        revoked = sum(api_key_revoke(prefix=api_key.prefix)[1] for api_key in queryset)
        self.message_user(
            request,
            f"Revoked {counted(revoked, 'API key')}: refused at once here, and by every process "
            "within PREDCACHE_API_KEY_CACHE_SECONDS.",
            messages.SUCCESS,
        )
