"""How the admin shows things: targets shortened for a list, backend labels, counts, compact times, purges."""

from __future__ import annotations

from datetime import datetime

from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from caching.models import ModelEndpoint

# Longest target shown whole in a list; longer ones keep both ends, the full one is the tooltip.
TARGET_LIST_CHARACTERS = 34


def shortened(text: str, limit: int = TARGET_LIST_CHARACTERS) -> str:
    """``text`` cut in the middle to ``limit`` characters: a URL's host and a path's end both matter."""
    if len(text) <= limit:
        return text
    # The end says most (a Vertex endpoint's id, the model in a URL's path), then the start.
    head = (limit - 1) * 2 // 5
    return f"{text[:head]}…{text[len(text) - (limit - 1 - head) :]}"


def backend_label(model: ModelEndpoint) -> SafeString:
    """The backend's short value (``http``), its description as the tooltip: one line in any list."""
    return format_html('<span title="{}">{}</span>', model.get_backend_display(), model.backend)


def target_label(target: str) -> SafeString:
    """A target short enough for a list column, with the full one as the tooltip."""
    return format_html('<span class="target" title="{}">{}</span>', target, shortened(target))


def counted(count: int, noun: str) -> str:
    """``1 model``, ``2 models``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def compact_time(moment: datetime | None) -> SafeString:
    """A timestamp as 2026-12-01 21:48 (one short line), the full time in the tooltip and markup."""
    if moment is None:
        return format_html("{}", "-")
    local = timezone.localtime(moment)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        local.isoformat(),
        local.strftime("%Y-%m-%d %H:%M:%S %Z"),
        local.strftime("%Y-%m-%d %H:%M"),
    )


def purge_history_url(model: ModelEndpoint) -> str:
    """The purge records of ``model`` in the admin."""
    return f"{reverse('admin:caching_purgerecord_changelist')}?model__id__exact={model.pk}"


def purge_summary_row(model: ModelEndpoint) -> dict[str, object]:
    """What the purge confirmation shows of one model: what it is and what was purged before."""
    count = getattr(model, "purge_count", 0)
    last = getattr(model, "last_purged_at", None)
    if count:
        history = format_html(
            '<a href="{}">{}</a>, last {}',
            purge_history_url(model),
            counted(count, "purge"),
            compact_time(last),
        )
    else:
        history = format_html("{}", "never purged")
    policy = getattr(model, "policy", None)
    return {
        "model": model,
        "url": reverse("admin:caching_modelendpoint_change", args=[model.pk]),
        "backend": backend_label(model),
        "target": target_label(model.target),
        "ttl": None if policy is None else policy.ttl_seconds,
        "history": history,
    }
