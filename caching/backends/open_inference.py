"""Open Inference Protocol (KServe v2) in JSON: model metadata, request tensors and answer rows.

No transport here: the ``http`` backend fetches and posts, passing in what it received; this module
decides what each request holds and what each answer means.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from caching.backends.base import BackendError, BackendMisconfigured, BackendRejectedInput, BackendResult

logger = logging.getLogger(__name__)

# A path prefix is allowed: some gateways mount the v2 routes below one.
_INFER_PATH = re.compile(r"/v2/models/[^/]+(?:/versions/[^/]+)?/infer$")
# A model refused with 400 may have been redeployed with other inputs; ask again, but not on
# every bad request.
METADATA_REFRESH_SECONDS = 60.0

_SCALAR_TYPES = frozenset({bool, int, float, str})
_INTEGER_RANGES = {f"INT{bits}": (-(2 ** (bits - 1)), 2 ** (bits - 1)) for bits in (8, 16, 32, 64)} | {
    f"UINT{bits}": (0, 2**bits) for bits in (8, 16, 32, 64)
}
_FLOAT_MAX = {"FP16": 65504.0, "FP32": 3.4028234663852886e38, "FP64": sys.float_info.max}
_NUMBERS = frozenset({int, float})


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


# --- requests -----------------------------------------------------------------------------------


class _NotATensor(ValueError):
    """A value that cannot be one row of a tensor: ragged, wrong shape, or values of the wrong type."""


_Layout = tuple[str, str, tuple[int, ...]]  # an input's name, datatype and row shape


class Batch:
    """Instances whose rows share one shape per input: one request, one tensor per input."""

    def __init__(self, layout: list[_Layout]) -> None:
        self.layout = layout  # (name, datatype, row shape) per input, in request order
        self.positions: list[int] = []  # where each row came from in the backend's instances
        self.data: list[list[Any]] = [[] for _ in layout]

    def add(self, index: int, rows: list[list[Any]]) -> None:
        self.positions.append(index)
        for data, row in zip(self.data, rows, strict=True):
            data.extend(row)

    def body(self, parameters: dict[str, Any] | None) -> bytes:
        """The JSON inference request for this batch."""
        size = len(self.positions)
        inputs = [
            {"name": name, "shape": [size, *row_shape], "datatype": datatype, "data": data}
            for (name, datatype, row_shape), data in zip(self.layout, self.data, strict=True)
        ]
        body: dict[str, Any] = {"inputs": inputs}
        if parameters is not None:
            body["parameters"] = parameters
        return orjson.dumps(body)


def request_batches(instances: Sequence[Any], declared: Mapping[str, DeclaredInput] | None) -> list[Batch]:
    """The instances (at least one) as typed v2 requests; rejects a bad instance before any is sent."""
    return _undeclared_batches(instances) if declared is None else _declared_batches(instances, declared)


def _declared_batches(instances: Sequence[Any], declared: Mapping[str, DeclaredInput]) -> list[Batch]:
    """Each instance checked and typed against the metadata alone, never against its batchmates.

    Rows that differ in a dimension the model declares as -1 cannot share a tensor, so each
    distinct combination of row shapes is its own request.
    """
    batches: dict[tuple[tuple[int, ...], ...], Batch] = {}
    for index, instance in enumerate(instances):
        shapes, rows = _declared_rows(index, instance, declared)
        batch = batches.get(shapes)
        if batch is None:
            layout = [
                (spec.name, spec.datatype, shape)
                for spec, shape in zip(declared.values(), shapes, strict=True)
            ]
            batch = batches[shapes] = Batch(layout)
        batch.add(index, rows)
    return list(batches.values())


def _declared_rows(
    index: int, instance: Any, declared: Mapping[str, DeclaredInput]
) -> tuple[tuple[tuple[int, ...], ...], list[list[Any]]]:
    """One instance's row shapes and converted values, in the declared order of the inputs."""
    _require_object(index, instance)
    unknown = sorted(instance.keys() - declared.keys())
    if unknown:
        raise BackendRejectedInput(
            f"input {unknown[0]!r} is not one of the model's inputs {sorted(declared)}", instance=index
        )
    missing = [name for name in declared if name not in instance]
    if missing:
        raise BackendRejectedInput(
            f"input {missing[0]!r} is missing (the model takes {sorted(declared)})", instance=index
        )
    shapes: list[tuple[int, ...]] = []
    rows: list[list[Any]] = []
    for spec in declared.values():
        try:
            flat: list[Any] = []
            shape = _flatten(instance[spec.name], flat)
            if not spec.takes_row(shape):
                raise _NotATensor(
                    f"has shape {list(shape)}, the model takes {list(spec.shape)} (batch dimension first)"
                )
            rows.append(_converted(flat, spec.datatype))
        except _NotATensor as exc:
            raise BackendRejectedInput(f"input {spec.name!r} {exc}", instance=index) from None
        shapes.append(shape)
    return tuple(shapes), rows


def _undeclared_batches(instances: Sequence[Any]) -> list[Batch]:
    """Without metadata: numbers go as FP64, booleans as BOOL, strings as BYTES, whatever the batch.

    Nothing says which shapes the model takes, so every instance must match the first.
    """
    batch: Batch | None = None
    for index, instance in enumerate(instances):
        layout, rows = _undeclared_rows(index, instance, None if batch is None else batch.layout)
        if batch is None:
            batch = Batch(layout)
        batch.add(index, rows)
    assert batch is not None
    return [batch]


def _undeclared_rows(
    index: int, instance: Any, earlier: list[_Layout] | None
) -> tuple[list[_Layout], list[list[Any]]]:
    """One instance's layout and values, typed by kind, checked against an earlier instance's layout."""
    _require_object(index, instance)
    names = sorted(instance)
    if earlier is not None and names != [name for name, _, _ in earlier]:
        raise BackendRejectedInput(
            f"inputs {names} differ from an earlier instance's {[name for name, _, _ in earlier]}",
            instance=index,
        )
    layout: list[_Layout] = []
    rows: list[list[Any]] = []
    for position, name in enumerate(names):
        try:
            flat: list[Any] = []
            shape = _flatten(instance[name], flat)
            if not flat:
                raise _NotATensor("holds no values, so with no model metadata its datatype is unknown")
            datatype = _guessed_datatype(flat)
            if earlier is not None:
                _, earlier_datatype, earlier_shape = earlier[position]
                if shape != earlier_shape:
                    raise _NotATensor(
                        f"has shape {list(shape)} but an earlier instance has {list(earlier_shape)}"
                    )
                if datatype != earlier_datatype:
                    raise _NotATensor(
                        f"holds {datatype} values but an earlier instance holds {earlier_datatype}"
                    )
            rows.append(_converted(flat, datatype))
        except _NotATensor as exc:
            raise BackendRejectedInput(f"input {name!r} {exc}", instance=index) from None
        layout.append((name, datatype, shape))
    return layout, rows


def _require_object(index: int, instance: Any) -> None:
    if type(instance) is not dict or not instance:
        raise BackendRejectedInput("a v2 instance is an object mapping input names to values", instance=index)


def _flatten(value: Any, out: list[Any]) -> tuple[int, ...]:
    """Append ``value``'s leaves to ``out`` in row-major order and return its shape."""
    if type(value) is not list:
        out.append(value)
        return ()
    if not any(type(item) is list for item in value):  # innermost dimension: no per-leaf calls
        out.extend(value)
        return (len(value),)
    shape: tuple[int, ...] | None = None
    for item in value:
        if type(item) is not list:
            raise _NotATensor("is not a rectangular nested list")
        item_shape = _flatten(item, out)
        if shape is None:
            shape = item_shape
        elif item_shape != shape:
            raise _NotATensor("is not a rectangular nested list")
    assert shape is not None
    return (len(value), *shape)


def _unflatten(flat: list[Any], shape: Sequence[int]) -> list[Any]:
    """Nest a fresh row-major slice back into ``shape`` (at least one dimension)."""
    if len(shape) == 1:
        return flat
    step = math.prod(shape[1:])
    return [_unflatten(flat[start * step : (start + 1) * step], shape[1:]) for start in range(shape[0])]


def _guessed_datatype(values: list[Any]) -> str:
    """The datatype of a row's values (at least one) when the model declares none."""
    kinds = {type(value) for value in values}
    if kinds <= _NUMBERS:
        return "FP64"  # even for ints: an instance's tensor must not depend on its batchmates
    if kinds == {bool}:
        return "BOOL"
    if kinds == {str}:
        return "BYTES"
    if kinds <= _SCALAR_TYPES:
        raise _NotATensor(f"mixes {_kind_names(kinds)} values; a tensor holds one type")
    raise _NotATensor(
        f"holds {_kind_names(kinds - _SCALAR_TYPES)} values; tensors hold numbers, booleans or strings"
    )


def _converted(values: list[Any], datatype: str) -> list[Any]:
    """``values`` as JSON for a ``datatype`` tensor; raises :class:`_NotATensor` for any it cannot hold."""
    kinds = {type(value) for value in values}
    if datatype in _INTEGER_RANGES:
        return _as_integers(values, kinds, datatype)
    if datatype in _FLOAT_MAX:
        _require_kinds(kinds, _NUMBERS, datatype)
        try:
            floats = [float(value) for value in values]
        except OverflowError:
            raise _NotATensor(f"holds a number outside the {datatype} range") from None
        if floats and max(map(abs, floats)) > _FLOAT_MAX[datatype]:
            raise _NotATensor(f"holds a number outside the {datatype} range")
        return floats
    if datatype == "BOOL":
        _require_kinds(kinds, frozenset({bool}), datatype)
    elif datatype == "BYTES":
        _require_kinds(kinds, frozenset({str}), datatype)
    else:
        raise BackendMisconfigured(
            f"the model declares datatype {datatype!r}, which JSON tensors cannot carry"
        )
    return values


def _as_integers(values: list[Any], kinds: set[type], datatype: str) -> list[Any]:
    _require_kinds(kinds, _NUMBERS, datatype)
    if float in kinds:  # 2.0 is the integer 2 (it shares 2's cache entry); 2.5 is not
        fraction = next((value for value in values if type(value) is float and not value.is_integer()), None)
        if fraction is not None:
            raise _NotATensor(f"holds {fraction!r}, not a whole number as {datatype} needs")
        values = [int(value) for value in values]
    low, end = _INTEGER_RANGES[datatype]
    if values and (min(values) < low or max(values) >= end):
        raise _NotATensor(f"holds an integer outside the {datatype} range")
    return values


def _require_kinds(kinds: set[type], allowed: frozenset[type], datatype: str) -> None:
    if not kinds <= allowed:
        raise _NotATensor(f"holds {_kind_names(kinds - allowed)} values, the model takes {datatype}")


def _kind_names(kinds: set[type]) -> str:
    names = {type(None): "null", dict: "object", list: "list"}
    return ", ".join(sorted(names.get(kind, kind.__name__) for kind in kinds))


# --- answers ------------------------------------------------------------------------------------


def merged_result(batches: list[Batch], results: list[BackendResult], size: int) -> BackendResult:
    """One result for all instances, in their order, from one result per batch."""
    if len(results) == 1:
        return results[0]
    predictions: list[Any] = [None] * size
    for batch, result in zip(batches, results, strict=True):
        for position, prediction in zip(batch.positions, result.predictions, strict=True):
            predictions[position] = prediction
    versions = {result.model_version_id for result in results}
    if len(versions) > 1:  # a rollout between the requests: not one version to cache under
        return BackendResult(predictions=predictions, cacheable=False)
    return BackendResult(predictions=predictions, model_version_id=versions.pop())


def batch_result(document: Any, batch_size: int) -> BackendResult:
    """One batch's predictions from the server's decoded JSON answer: an object of outputs per instance."""
    outputs = document.get("outputs") if isinstance(document, dict) else None
    if not isinstance(outputs, list) or not outputs:
        raise BackendError("model server's v2 answer has no 'outputs' list")
    predictions: list[dict[str, Any]] = [{} for _ in range(batch_size)]
    for output in outputs:
        name, rows = _split_output(output, batch_size)
        if name in predictions[0]:
            raise BackendError(f"model server's v2 answer has output {name!r} twice")
        for prediction, row in zip(predictions, rows, strict=True):
            prediction[name] = row
    version = document.get("model_version")
    return BackendResult(predictions=predictions, model_version_id=None if version is None else str(version))


def _split_output(output: Any, batch_size: int) -> tuple[str, list[Any]]:
    """One output tensor cut along its first dimension: a row (or scalar) per instance."""
    if not isinstance(output, dict) or not isinstance(output.get("name"), str):
        raise BackendError("model server's v2 answer has an output without a name")
    name: str = output["name"]
    where = f"model server's v2 output {name!r}"
    shape = output.get("shape")
    if not (isinstance(shape, list) and shape and all(type(size) is int and size >= 0 for size in shape)):
        raise BackendError(f"{where} has no valid shape")
    if shape[0] != batch_size:
        raise BackendError(f"{where} has first dimension {shape[0]} for a batch of {batch_size}")
    data = output.get("data")
    if not isinstance(data, list):
        raise BackendError(f"{where} has no 'data' list (binary tensor data is not supported)")
    flat: list[Any] = []
    try:
        data_shape = list(_flatten(data, flat))  # the protocol allows nested or flat data
    except _NotATensor as exc:
        raise BackendError(f"{where} data {exc}") from None
    size = math.prod(shape)
    if data_shape != shape and data_shape != [size]:
        raise BackendError(f"{where} has {len(flat)} values for shape {shape}")
    if any(type(value) not in _SCALAR_TYPES for value in flat):
        raise BackendError(f"{where} holds values that are not numbers, booleans or strings")
    row_shape = shape[1:]
    if not row_shape:
        return name, flat
    step = math.prod(row_shape)
    return name, [_unflatten(flat[row * step : (row + 1) * step], row_shape) for row in range(batch_size)]
