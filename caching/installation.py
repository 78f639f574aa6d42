"""The id that names this installation in every Redis key, so installations sharing a Redis share nothing."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction

from caching.models import Installation

_VALID = re.compile(r"[0-9a-z]{1,32}")


def installation_id() -> str:
    """``PREDCACHE_INSTALLATION_ID`` if set, else the id the migrations stored in the database."""
    configured: str = settings.PREDCACHE_INSTALLATION_ID
    if configured:
        if not _VALID.fullmatch(configured):
            raise ImproperlyConfigured("PREDCACHE_INSTALLATION_ID must be 1-32 lowercase letters and digits")
        return configured
    row = Installation.objects.filter(pk=Installation.SINGLETON).first()
    if row is None:
        # The migration creates it; a database flushed since (tests) gets a new one here.
        try:
            with transaction.atomic():
                row = Installation.objects.create(pk=Installation.SINGLETON)
        except IntegrityError:  # another process created it first
            row = Installation.objects.get(pk=Installation.SINGLETON)
    return row.installation_id
