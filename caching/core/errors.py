"""The root of the errors a user can cause, and the one table of the HTTP status each code answers.

Bad input, an unknown model, a model server failing, Redis down during a purge: each is a
:class:`PredcacheError` naming itself by a ``code``. The API, the admin API and the CLI read what
a code answers from :data:`STATUS` (and the CLI its exit status from :func:`exit_status`), so an
error answers alike wherever it surfaces. Plain Python: core and backends raise these too.
"""

from __future__ import annotations

# Every code a client or operator can be told, and its HTTP status.
STATUS: dict[str, int] = {
    # the request
    "bad_request": 400,  # refused before routing (a Host not allowed)
    "invalid_request": 400,
    "invalid_json": 400,
    "invalid_instances": 400,  # the model server refused them
    "warm_file_invalid": 400,
    "model_not_in_scope": 403,  # the API key may predict on other models only
    "not_found": 404,  # no such route
    "model_not_found": 404,
    "api_key_not_found": 404,
    "version_not_served": 409,
    "warm_busy": 409,  # another warm of the model is running
    "length_required": 411,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,  # the API key's rate limit
    # the model server, the cache and the broker
    "backend_error": 502,
    "backend_misconfigured": 502,
    "backend_unavailable": 503,
    "cache_unavailable": 503,
    "warm_not_queued": 503,
    "backend_timeout": 504,
    "not_cached": 504,  # only-if-cached, and some instance is not
}

EX_TEMPFAIL = 75  # sysexits.h: "temporary failure; the user is invited to retry"


class PredcacheError(Exception):
    """An error a user can cause; ``code`` names it to clients, ``status`` is what HTTP answers."""

    code = "invalid_request"

    @property
    def status(self) -> int:
        return STATUS[self.code]

    @property
    def message(self) -> str:
        return str(self)

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries (``Retry-After``, say)."""
        return {}


def exit_status(code: str) -> int:
    """The CLI's exit status: EX_TEMPFAIL when something is unavailable (a retry may pass), else 1."""
    return EX_TEMPFAIL if STATUS[code] in (503, 504) else 1
