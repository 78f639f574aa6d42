"""Model backends behind one Protocol, built by kind name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from caching.backends.base import Backend, BackendConfigError

BACKEND_KINDS = ("local", "http", "vertex")
# The options each backend understands; anything else is a configuration error, not ignored.
BACKEND_OPTIONS: dict[str, frozenset[str]] = {
    "local": frozenset({"method"}),
    "http": frozenset({"protocol"}),
    "vertex": frozenset({"transport", "max_request_bytes"}),
}


def build_backend(
    kind: str,
    target: str,
    *,
    timeout_seconds: float,
    options: dict[str, Any],
    model_dir: Path,
    api_endpoint: str = "",
) -> Backend:
    """Construct the backend for a registered model; raises :class:`BackendConfigError`."""
    unknown = sorted(set(options) - BACKEND_OPTIONS.get(kind, frozenset()))
    if unknown:
        known = ", ".join(sorted(BACKEND_OPTIONS.get(kind, ()))) or "none"
        raise BackendConfigError(f"unknown {kind} backend option(s) {', '.join(unknown)} (known: {known})")
    if kind == "http":
        from caching.backends.http import HttpBackend

        return HttpBackend(target, timeout_seconds=timeout_seconds, protocol=options.get("protocol", "row"))
    if kind == "local":
        from caching.backends.local import LocalBackend

        return LocalBackend(target, model_dir=model_dir, method=options.get("method", "predict"))
    if kind == "vertex":
        from caching.backends.vertex import VERTEX_MAX_REQUEST_BYTES, VertexBackend

        return VertexBackend(
            target,
            timeout_seconds=timeout_seconds,
            api_endpoint=api_endpoint,
            transport=options.get("transport", "grpc"),
            max_request_bytes=options.get("max_request_bytes", VERTEX_MAX_REQUEST_BYTES),
        )
    raise BackendConfigError(f"unknown backend kind {kind!r}")
