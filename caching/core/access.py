"""What an API key may do on the predict routes: which models, how often, and until when."""

from __future__ import annotations

from dataclasses import dataclass

from caching.core.errors import PredcacheError
from caching.core.ratelimit import Rate


class ModelNotInScope(PredcacheError):
    """The API key is limited to other models (predictions, and purges by an admin key).

    Said alike whether the model asked for exists or not, so a scoped key learns nothing about
    the models outside its scope.
    """

    code = "model_not_in_scope"

    @classmethod
    def named(cls, name: str, access: KeyAccess) -> ModelNotInScope:
        # Clipped: a name from a URL can be as long as the request line.
        return cls(f"this API key may not use {name[:128]!r}: it may use {access.scope}")

    @classmethod
    def for_endpoint(cls, endpoint: str, access: KeyAccess) -> ModelNotInScope:
        return cls(f"this API key may not use {endpoint[:300]!r}: it may use {access.scope}")


@dataclass(frozen=True, slots=True)
class KeyAccess:
    """An API key's limits, as the request path checks them on every request."""

    key: str  # the key's public prefix: names its rate bucket and its last-use record
    models: frozenset[str] | None = None  # the model names it may predict on; None: every model
    rate: Rate | None = None  # None: no rate limit
    expires_at: float | None = None  # Unix time; None: never

    def may_predict(self, model_name: str) -> bool:
        return self.models is None or model_name in self.models

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    @property
    def scope(self) -> str:
        """The models it may predict on, as a sentence ends: ``every model``, ``'a' and 'b' only``."""
        if self.models is None:
            return "every model"
        names = sorted(self.models)
        shown = ", ".join(repr(name) for name in names[:10])
        more = f" and {len(names) - 10} more" if len(names) > 10 else ""
        return f"{shown}{more} only"
