"""The id that names this installation in every Redis key, so installations sharing a Redis share nothing."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from caching.models import Installation


class InstallationUnnamed(ImproperlyConfigured):
    """The database holds no installation id (and none is configured)."""


def installation_id() -> str:
    """``PREDCACHE_INSTALLATION_ID`` if set, else the id the migrations stored in the database.

    A missing row is an error, never replaced with a new id: processes that read the old one
    would keep serving under keys that this process's purges no longer reach.
    """
    configured: str = settings.PREDCACHE_INSTALLATION_ID
    if configured:
        return configured
    row = Installation.objects.filter(pk=Installation.SINGLETON).first()
    if row is None:
        raise InstallationUnnamed(
            "this database holds no installation id: run `manage.py migrate`; after a `flush`, "
            "`manage.py migrate caching 0004 && manage.py migrate` names it anew "
            "(or set PREDCACHE_INSTALLATION_ID)"
        )
    return row.installation_id
