"""API keys: created here, only their hash stored."""

from __future__ import annotations

from django.db import transaction
from rest_framework_api_key.models import APIKey

from caching.models import ApiKeyGrant


@transaction.atomic
def api_key_create(*, label: str, may_administer: bool = False) -> str:
    """Create an API key and return it; only its hash is stored, so it cannot be shown again.

    Every key may predict; ``may_administer`` also lets it call the management API.
    """
    api_key, key = APIKey.objects.create_key(name=label)
    if may_administer:
        ApiKeyGrant.objects.create(api_key=api_key, may_administer=True)
    return key
