"""Model backends behind one Protocol, registered once by kind; everything else derives from the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caching.backends.base import Backend, BackendConfigError


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a backend is built with besides its model's settings: per-process resources."""

    model_dir: Path
    http_pool: Any = None  # a urllib3 PoolManager shared by the process's http backends (None: its own)


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """One backend kind: its name in settings, its label, the options it understands, its builder."""

    kind: str
    label: str
    options: frozenset[str]
    build: Callable[..., Backend]  # (target, *, timeout_seconds, api_endpoint, options, context)


BACKENDS: dict[str, BackendSpec] = {}


def register_backend(
    kind: str, *, label: str, options: frozenset[str] = frozenset()
) -> Callable[[Callable[..., Backend]], Callable[..., Backend]]:
    """Register a builder for ``kind``: model field choices, CLI choices and validation follow."""

    def register(build: Callable[..., Backend]) -> Callable[..., Backend]:
        BACKENDS[kind] = BackendSpec(kind, label, options, build)
        return build

    return register


def backend_choices() -> list[tuple[str, str]]:
    """``(kind, label)`` of every registered backend, for the model's field and forms."""
    return [(spec.kind, spec.label) for spec in BACKENDS.values()]


def build_backend(
    kind: str,
    target: str,
    *,
    timeout_seconds: float,
    options: dict[str, Any],
    context: BuildContext,
    api_endpoint: str = "",
) -> Backend:
    """Construct the backend for a registered model; raises :class:`BackendConfigError`."""
    spec = BACKENDS.get(kind)
    if spec is None:
        raise BackendConfigError(f"unknown backend kind {kind!r} (known: {', '.join(BACKENDS)})")
    unknown = sorted(set(options) - spec.options)
    if unknown:
        known = ", ".join(sorted(spec.options)) or "none"
        raise BackendConfigError(f"unknown {kind} backend option(s) {', '.join(unknown)} (known: {known})")
    return spec.build(
        target, timeout_seconds=timeout_seconds, api_endpoint=api_endpoint, options=options, context=context
    )


# The builders import their modules when called: a process imports only the backends it serves.


@register_backend("local", label="Local model file (joblib)", options=frozenset({"method"}))
def _local(target: str, *, options: dict[str, Any], context: BuildContext, **_: Any) -> Backend:
    from caching.backends.local import LocalBackend

    return LocalBackend(target, model_dir=context.model_dir, method=options.get("method", "predict"))


@register_backend("http", label="HTTP JSON prediction server", options=frozenset({"protocol"}))
def _http(
    target: str, *, timeout_seconds: float, options: dict[str, Any], context: BuildContext, **_: Any
) -> Backend:
    from caching.backends.http import HttpBackend

    return HttpBackend(
        target,
        timeout_seconds=timeout_seconds,
        protocol=options.get("protocol", "row"),
        pool=context.http_pool,
    )


@register_backend(
    "vertex", label="Google Vertex AI endpoint", options=frozenset({"transport", "max_request_bytes"})
)
def _vertex(
    target: str, *, timeout_seconds: float, api_endpoint: str, options: dict[str, Any], **_: Any
) -> Backend:
    from caching.backends.vertex import VERTEX_MAX_REQUEST_BYTES, VertexBackend

    return VertexBackend(
        target,
        timeout_seconds=timeout_seconds,
        api_endpoint=api_endpoint,
        transport=options.get("transport", "grpc"),
        max_request_bytes=options.get("max_request_bytes", VERTEX_MAX_REQUEST_BYTES),
    )
