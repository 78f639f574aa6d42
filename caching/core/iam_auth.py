"""IAM authentication to Memorystore: an OAuth access token as the AUTH password of each new connection.

Memorystore for Redis Cluster with IAM authentication takes the access token of a principal
holding ``redis.clusters.connect`` (``roles/redis.dbConnectionUser``) as the password of user
``default``, over TLS. Tokens expire (after an hour), so none is configured: redis-py asks the
:class:`IamTokenCredentials` provider for credentials each time it opens a connection, and the
provider hands out the token of the process's Google credentials, refreshed first when it has
expired or is about to.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from redis.credentials import CredentialProvider

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Refreshed this long before it expires, so a connection opened just before expiry still gets in.
REFRESH_MARGIN = timedelta(minutes=5)


class IamTokenCredentials(CredentialProvider):
    """``("default", <access token>)`` for each new Redis connection.

    ``credentials`` are google-auth credentials; by default the process's own
    (``google.auth.default``: Cloud Run's service account, or the application default
    credentials of a workstation), looked up on first use.
    """

    def __init__(self, credentials: Any = None, *, refresh_margin: timedelta = REFRESH_MARGIN) -> None:
        self._credentials = credentials
        self._refresh_margin = refresh_margin
        self._lock = threading.Lock()  # connections open on many threads; one refresh at a time

    def get_credentials(self) -> tuple[str, str]:
        """The user and a current token; raises ``redis.AuthenticationError`` if none can be had.

        Raised as redis-py's own error, a token that cannot be had is an outage like any other
        (the request path fails open), not a crash of the connection attempt.
        """
        from google.auth.exceptions import GoogleAuthError

        with self._lock:
            try:
                credentials = self._credentials
                if credentials is None:
                    credentials = self._credentials = _default_credentials()
                if self._needs_refresh(credentials):
                    from google.auth.transport.requests import Request

                    credentials.refresh(Request())
            except GoogleAuthError as exc:
                raise redis.AuthenticationError(f"no IAM access token for Redis: {exc}") from exc
            return "default", str(credentials.token)

    def _needs_refresh(self, credentials: Any) -> bool:
        if not credentials.token:
            return True
        expiry: datetime | None = credentials.expiry  # naive UTC in google-auth; None: never expires
        if expiry is None:
            return False
        if expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=UTC)
        return datetime.now(UTC) >= expiry - self._refresh_margin


def _default_credentials() -> Any:
    import google.auth

    credentials, _project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    return credentials
