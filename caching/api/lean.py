"""The lean dispatch: the predict routes skip Django's middleware stack, but not its security checks.

A predict request needs its API key, its body and the cache. Sessions, CSRF, login
authentication, messages, WhiteNoise, URL resolution and DRF's request handling give it nothing
and cost a cached hit about a third of its time (``bench/hit_path.py``). :class:`LeanRoutes`, next
after the probes in ``MIDDLEWARE``, serves the routes whose view is marked :func:`lean` itself,
behind only the security middleware that ``MIDDLEWARE`` lists (HTTPS redirect, HSTS and the
other security headers, the ``ALLOWED_HOSTS`` check, Content-Length): the real classes, so every
setting means what it means on the other routes. Every other request goes down the whole stack.

The lean views are the URLconf's own callbacks, so Django's resolver reaches the same code where
the middleware is not installed, and drf-spectacular describes them from the DRF view they name.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils.module_loading import import_string
from rest_framework.exceptions import AuthenticationFailed, MethodNotAllowed, NotAuthenticated
from rest_framework.views import APIView

from caching.api.authentication import request_key
from caching.api.errors import error_response

Handler = Callable[[HttpRequest], HttpResponse]

# The part of MIDDLEWARE a lean route runs, in the order MIDDLEWARE lists it.
SECURITY_MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",  # HTTPS redirect, HSTS, nosniff, referrer policy
    "django.middleware.common.CommonMiddleware",  # the ALLOWED_HOSTS check, Content-Length
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)


class LeanView(Protocol):
    """A view the lean dispatch serves: marked by :func:`lean`."""

    lean: bool

    def __call__(self, request: HttpRequest, **kwargs: Any) -> HttpResponse: ...


def lean(view: Callable[..., HttpResponse]) -> LeanView:
    """Mark ``view`` for the lean dispatch (it is CSRF-exempt: nothing it serves uses cookies)."""
    view.lean = True  # type: ignore[attr-defined]
    view.csrf_exempt = True  # type: ignore[attr-defined]
    return view  # type: ignore[return-value]


def lean_route(schema: type[APIView]) -> Callable[[Callable[..., HttpResponse]], LeanView]:
    """An API-key route served lean, answering as DRF's ``schema`` view would; ``schema`` describes it.

    The key is checked before the method, errors are the JSON error shape, and every answer
    names the allowed methods in ``Allow``, all as DRF does, so that a client sees no difference.
    The view is called with the key's limits as ``access`` (a :class:`KeyAccess`).
    """
    allowed_methods = schema().allowed_methods
    allow = ", ".join(allowed_methods)

    def decorate(view: Callable[..., HttpResponse]) -> LeanView:
        @functools.wraps(view)
        def route(request: HttpRequest, **kwargs: Any) -> HttpResponse:
            try:
                verified = request_key(request)
                if verified is None:
                    raise NotAuthenticated()
                if request.method not in allowed_methods:
                    raise MethodNotAllowed(request.method)
                response = view(request, access=verified.access, **kwargs)
            except Exception as exc:
                if isinstance(exc, NotAuthenticated | AuthenticationFailed):
                    exc.auth_header = "Api-Key"  # type: ignore[attr-defined]
                answer = error_response(exc)
                if answer is None:
                    raise  # a bug: Django answers 500 and logs it
                response = answer
            add_own_headers(response, (("Allow", allow),))
            return response

        # What drf-spectacular reads from a DRF view's callback, to describe the route.
        route.cls = schema  # type: ignore[attr-defined]
        route.initkwargs = {}  # type: ignore[attr-defined]
        return lean(route)

    return decorate


def add_own_headers(response: HttpResponse, headers: Iterable[tuple[str, str]]) -> None:
    """Add headers whose names and values this code composed: ASCII, no line breaks.

    Django checks and converts each header it is given (both halves, for charset and line
    breaks), which cost a cached hit about a tenth of what predcache adds to it; headers built
    here from constants and numbers need none of it, and go straight into the response's store.
    """
    store = response.headers._store  # type: ignore[attr-defined]
    for name, value in headers:
        store[name.lower()] = (name, value)


def lean_patterns(resolver: URLResolver | None = None, prefix: str = "^/") -> Iterator[tuple[str, LeanView]]:
    """``(regex of the whole path, view)`` for each lean view in the URLconf, in resolving order."""
    resolver = resolver or get_resolver()
    for pattern in resolver.url_patterns:
        regex = prefix + pattern.pattern.regex.pattern.removeprefix("^")
        if isinstance(pattern, URLResolver):
            yield from lean_patterns(pattern, regex)
        elif isinstance(pattern, URLPattern) and getattr(pattern.callback, "lean", False):
            if getattr(pattern.pattern, "converters", None):  # their values would reach the view unconverted
                raise ImproperlyConfigured(f"the lean route {pattern.pattern} must not use path converters")
            yield regex, pattern.callback


class LeanRoutes:
    """Serves the lean routes behind the security middleware alone; the rest go down the stack."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response
        self._routes: list[tuple[re.Pattern[str], LeanView]] | None = None
        # Built as Django builds its own chain: each layer turns what it raises into a response.
        handler: Handler = convert_exception_to_response(self._dispatch)
        for path in reversed([path for path in settings.MIDDLEWARE if path in SECURITY_MIDDLEWARE]):
            handler = convert_exception_to_response(import_string(path)(handler))
        self._secured = handler

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self._routes is None:  # the URLconf is read at the first request, as Django's own resolver does
            self._routes = [(re.compile(regex), view) for regex, view in lean_patterns()]
        path = request.path_info
        for regex, view in self._routes:
            match = regex.match(path)
            if match is not None:
                request.lean_call = (view, match.groupdict())  # type: ignore[attr-defined]
                return self._secured(request)
        return self.get_response(request)

    @staticmethod
    def _dispatch(request: HttpRequest) -> HttpResponse:
        view, kwargs = request.lean_call  # type: ignore[attr-defined]
        return view(request, **kwargs)
