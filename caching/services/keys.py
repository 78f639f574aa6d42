"""API keys: created with their limits (only their hash stored), revoked, and their last use recorded."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import DatabaseError, close_old_connections, transaction
from django.utils import timezone
from rest_framework_api_key.models import APIKey

from caching.core.access import KeyAccess
from caching.core.errors import PredcacheError
from caching.core.ratelimit import Rate
from caching.models import ApiKeyGrant, ModelEndpoint
from caching.runtime import get_runtime
from caching.services.predictions import ModelNotFound

logger = logging.getLogger(__name__)


class ApiKeyNotFound(PredcacheError):
    """No API key has the prefix given."""

    code = "api_key_not_found"


@transaction.atomic
def api_key_create(
    *,
    label: str,
    may_administer: bool = False,
    model_names: Sequence[str] = (),
    rate: Rate | None = None,
    expires_days: int | None = None,
) -> str:
    """Create an API key and return it; only its hash is stored, so it cannot be shown again.

    The key may predict on ``model_names`` only (none: every model), at most at ``rate`` (None:
    no limit), until ``expires_days`` from now (None: for ever); ``may_administer`` also lets it
    call the management API. Every name must be a registered model's (ModelNotFound otherwise).
    """
    max_length = APIKey._meta.get_field("name").max_length
    if not label or len(label) > max_length:
        raise ValidationError({"label": f"1 to {max_length} characters."})
    names = sorted(set(model_names))
    registered = set(ModelEndpoint.objects.filter(name__in=names).values_list("name", flat=True))
    unknown = [name for name in names if name not in registered]
    if unknown:
        raise ModelNotFound(f"no model is registered as {', '.join(repr(name[:128]) for name in unknown)}")
    expiry = None if expires_days is None else timezone.now() + timedelta(days=expires_days)
    api_key, key = APIKey.objects.create_key(name=label, expiry_date=expiry)
    ApiKeyGrant.objects.create(
        api_key=api_key,
        may_administer=may_administer,
        model_names=names,
        rate_limit=None if rate is None else rate.count,
        rate_period_seconds=60 if rate is None else rate.period_seconds,
    )
    return key


def api_key_revoke(*, prefix: str) -> tuple[APIKey, bool]:
    """Revoke the key whose public prefix (the part of the key before the dot) is ``prefix``.

    Returns the key and whether this revoked it (False: it was revoked already). Other
    processes stop accepting it within PREDCACHE_API_KEY_CACHE_SECONDS; this one at once.
    """
    api_key = APIKey.objects.filter(prefix=prefix.partition(".")[0]).first()
    if api_key is None:
        raise ApiKeyNotFound(f"no API key has the prefix {prefix[:50]!r}")
    if api_key.revoked:
        return api_key, False
    api_key.revoked = True
    api_key.save()  # the signal makes this process forget the key at once
    return api_key, True


def api_key_used(*, access: KeyAccess) -> None:
    """Note a request of the key: its last use is written in the background, at most once a minute.

    (PREDCACHE_API_KEY_LAST_USED_SECONDS.) The write is the only database query this costs, on a
    background thread, after whatever transaction is open commits (as other background work
    here is sent).
    """
    runtime = get_runtime()
    uses = runtime.api_key_uses
    if uses is not None and uses.due(access.key):
        at = timezone.now()
        job = functools.partial(api_key_last_used_record, prefix=access.key, at=at)
        transaction.on_commit(lambda: runtime.background.submit(("api-key-used", access.key), job))


def api_key_last_used_record(*, prefix: str, at: datetime) -> None:
    """Record that the key with ``prefix`` was used at ``at`` (never moving the time back)."""
    try:
        api_key = APIKey.objects.filter(prefix=prefix).only("pk").first()
        if api_key is None:
            return  # deleted meanwhile
        grant, _ = ApiKeyGrant.objects.get_or_create(api_key=api_key)
        ApiKeyGrant.objects.filter(pk=grant.pk).exclude(last_used_at__gte=at).update(last_used_at=at)
    except DatabaseError:
        logger.exception("could not record the last use of API key %s", prefix)
    finally:
        close_old_connections()  # this runs on a background thread, outside any request
