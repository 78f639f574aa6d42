"""Open Inference Protocol: what a model server declares of its inputs, fetched and remembered."""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson

logger = logging.getLogger(__name__)

# A path prefix is allowed: some gateways mount the v2 routes below one.
_INFER_PATH = re.compile(r"/v2/models/[^/]+(?:/versions/[^/]+)?/infer$")
# A model refused with 400 may have been redeployed with other inputs; ask again, but not on
# every bad request.
METADATA_REFRESH_SECONDS = 60.0


def is_infer_path(path: str) -> bool:
    """Whether a URL path is a model's infer route (``.../v2/models/NAME[/versions/V]/infer``)."""
    return _INFER_PATH.search(path) is not None


# --- model metadata -----------------------------------------------------------------------------


class MetadataUnreachable(Exception):
    """Raised by a :data:`MetadataFetch` that got no HTTP answer at all."""


# GETs the model's metadata route: (HTTP status, body); raises MetadataUnreachable.
MetadataFetch = Callable[[], tuple[int, bytes]]


@dataclass(frozen=True, slots=True)
class DeclaredInput:
    """One input as the model's metadata declares it; ``shape`` starts with the batch dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: any size

    def takes_row(self, row_shape: tuple[int, ...]) -> bool:
        """Whether one instance's value of this shape fits the declared shape after the batch dimension."""
        declared = self.shape[1:]
        return len(row_shape) == len(declared) and all(
            size in (-1, actual) for size, actual in zip(declared, row_shape, strict=True)
        )


class _BadMetadata(ValueError):
    """A metadata answer that does not declare the model's inputs usably."""


class MetadataMemory:
    """What one model's server declared, as this backend last heard it (one per backend object)."""

    __slots__ = ("answered_at", "due", "inputs", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inputs: Mapping[str, DeclaredInput] | None = None
        self.due = True  # ask the server on the next predict
        self.answered_at = -math.inf

    def declared_inputs(
        self, model_url: str, *, fetch: MetadataFetch, clock: Callable[[], float]
    ) -> Mapping[str, DeclaredInput] | None:
        """The model's declared inputs, fetched when due; None when it declares none usable."""
        with self.lock:  # one fetch per model even when many threads miss at once
            if self.due:
                _fetch_metadata(self, model_url, fetch, clock)
            return self.inputs

    def known_inputs(self) -> tuple[bool, Mapping[str, DeclaredInput] | None]:
        """Whether the server's metadata has been heard, and its declared inputs (no I/O)."""
        with self.lock:
            return self.answered_at > -math.inf, self.inputs

    def refresh_after_rejection(self, now: float) -> None:
        """After the server refused a request: ask again, unless it answered recently."""
        with self.lock:
            if now - self.answered_at >= METADATA_REFRESH_SECONDS:
                self.due = True


def _fetch_metadata(
    slot: MetadataMemory, model_url: str, fetch: MetadataFetch, clock: Callable[[], float]
) -> None:
    try:
        status, data = fetch()
    except MetadataUnreachable as exc:
        # Transient: keep what we knew and ask again on the next predict.
        logger.warning("no metadata from %s (%s); inferring datatypes this time", model_url, exc)
        return
    if status == 429 or status >= 500:
        logger.warning("no metadata from %s (HTTP %s) this time", model_url, status)
        return
    slot.due = False
    slot.answered_at = clock()
    if status != 200:
        logger.warning("%s serves no metadata (HTTP %s); inferring datatypes", model_url, status)
        slot.inputs = None
        return
    try:
        slot.inputs = _parsed_metadata(data)
    except _BadMetadata as exc:
        logger.warning("metadata from %s %s; inferring datatypes", model_url, exc)
        slot.inputs = None


def _parsed_metadata(data: bytes) -> dict[str, DeclaredInput]:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _BadMetadata("is not JSON") from None
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise _BadMetadata("has no 'inputs' list")
    declared: dict[str, DeclaredInput] = {}
    for entry in inputs:
        if not isinstance(entry, dict):
            raise _BadMetadata("has an input that is not an object")
        name, datatype, shape = (entry.get(field) for field in ("name", "datatype", "shape"))
        if not isinstance(name, str) or name in declared:
            raise _BadMetadata("has an input without a name, or one twice")
        if not isinstance(datatype, str):
            raise _BadMetadata(f"has no datatype for input {name!r}")
        if not (
            isinstance(shape, list) and shape and all(type(size) is int and size >= -1 for size in shape)
        ):
            raise _BadMetadata(f"has no valid shape (batch dimension first) for input {name!r}")
        declared[name] = DeclaredInput(name, datatype, tuple(shape))
    return declared
