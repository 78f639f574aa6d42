"""API key authentication: hashed keys (djangorestframework-api-key), verifications remembered briefly."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, cast

from django.http import HttpRequest
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework_api_key.models import APIKey

from caching.core.access import KeyAccess
from caching.core.memo import NO_VALUE
from caching.runtime import built_runtime, get_runtime
from caching.selectors import api_key_access_get
from caching.services import api_key_used

BEARER_REFUSED = (
    "predcache does not take Bearer tokens: send 'Authorization: Api-Key <key>' "
    "or an 'X-Api-Key: <key>' header"
)


def presented_key(request: HttpRequest | Request) -> str | None:
    """The key from ``Authorization: Api-Key <key>``, ``X-Api-Key`` or ``X-Goog-Api-Key``.

    ``X-Goog-Api-Key`` is what Google's client libraries send for ``client_options.api_key``,
    so the aiplatform SDK can authenticate to predcache without code changes.
    """
    authorization = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "api-key" and credentials.strip():
        return credentials.strip()
    for header in ("HTTP_X_API_KEY", "HTTP_X_GOOG_API_KEY"):
        key = request.META.get(header, "").strip()
        if key:
            return key
    return None


def forget_verified_keys() -> None:
    """Forget every remembered verification (called when keys change in this process)."""
    runtime = built_runtime()
    if runtime is not None:
        runtime.verified_keys.clear()


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    """A valid API key and what it may do, remembered for PREDCACHE_API_KEY_CACHE_SECONDS."""

    api_key: APIKey
    access: KeyAccess


def _verify(key: str) -> VerifiedKey | None:
    # sha256(key) names it in the memory: keys are high-entropy random strings, so a fast hash
    # is safe here, and remembering a verification spares each hit a database query or two.
    fingerprint = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    memory = get_runtime().verified_keys
    remembered = memory.get(fingerprint)
    if remembered is not NO_VALUE:
        return cast(VerifiedKey, remembered)
    try:
        api_key = APIKey.objects.get_from_key(key)  # revoked keys are not found
    except APIKey.DoesNotExist:
        return None
    verified = VerifiedKey(api_key, api_key_access_get(api_key=api_key))
    memory.put(fingerprint, verified)
    return verified


def request_key(request: HttpRequest | Request) -> VerifiedKey | None:
    """The valid API key the request carries, None if it carries none; AuthenticationFailed if invalid.

    Expiry is checked on every request, so a key stops working at its expiry time exactly;
    a revoked key, within PREDCACHE_API_KEY_CACHE_SECONDS.
    """
    key = presented_key(request)
    if key is None:
        scheme = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")[0]
        if scheme.lower() == "bearer":
            # An OAuth token (a Google access token, say) is not a predcache key: say what is.
            # Other schemes (Basic from a proxy in front of the admin) are left to the session.
            raise AuthenticationFailed(BEARER_REFUSED)
        return None
    verified = _verify(key)
    if verified is None:
        raise AuthenticationFailed("the API key is not valid")
    if verified.access.expires_at is not None and verified.access.expired(time.time()):
        raise AuthenticationFailed("the API key has expired")
    api_key_used(access=verified.access)
    return verified


class ApiKeyAuthentication(BaseAuthentication):
    """Authenticates requests that carry a valid, unrevoked, unexpired API key (``request.auth``)."""

    def authenticate(self, request: Request) -> tuple[Any, VerifiedKey] | None:
        verified = request_key(request)
        return None if verified is None else (None, verified)

    def authenticate_header(self, request: Request) -> str:
        return "Api-Key"


class HasApiKey(BasePermission):
    """Allows requests authenticated by :class:`ApiKeyAuthentication`."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, VerifiedKey)
