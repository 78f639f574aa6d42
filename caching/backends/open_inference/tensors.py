"""Open Inference Protocol: instances as typed request tensors, checked against the declared inputs."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from caching.backends.base import BackendMisconfigured, BackendRejectedInput
from caching.backends.open_inference.metadata import DeclaredInput

SCALAR_TYPES = frozenset({bool, int, float, str})
_INTEGER_RANGES = {f"INT{bits}": (-(2 ** (bits - 1)), 2 ** (bits - 1)) for bits in (8, 16, 32, 64)} | {
    f"UINT{bits}": (0, 2**bits) for bits in (8, 16, 32, 64)
}
_FLOAT_MAX = {"FP16": 65504.0, "FP32": 3.4028234663852886e38, "FP64": sys.float_info.max}
_NUMBERS = frozenset({int, float})


# --- requests -----------------------------------------------------------------------------------


class NotATensor(ValueError):
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
            shape = flatten(instance[spec.name], flat)
            if not spec.takes_row(shape):
                raise NotATensor(
                    f"has shape {list(shape)}, the model takes {list(spec.shape)} (batch dimension first)"
                )
            rows.append(_converted(flat, spec.datatype))
        except NotATensor as exc:
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
            shape = flatten(instance[name], flat)
            if not flat:
                raise NotATensor("holds no values, so with no model metadata its datatype is unknown")
            datatype = _guessed_datatype(flat)
            if earlier is not None:
                _, earlier_datatype, earlier_shape = earlier[position]
                if shape != earlier_shape:
                    raise NotATensor(
                        f"has shape {list(shape)} but an earlier instance has {list(earlier_shape)}"
                    )
                if datatype != earlier_datatype:
                    raise NotATensor(
                        f"holds {datatype} values but an earlier instance holds {earlier_datatype}"
                    )
            rows.append(_converted(flat, datatype))
        except NotATensor as exc:
            raise BackendRejectedInput(f"input {name!r} {exc}", instance=index) from None
        layout.append((name, datatype, shape))
    return layout, rows


def _require_object(index: int, instance: Any) -> None:
    if type(instance) is not dict or not instance:
        raise BackendRejectedInput("a v2 instance is an object mapping input names to values", instance=index)


def flatten(value: Any, out: list[Any]) -> tuple[int, ...]:
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
            raise NotATensor("is not a rectangular nested list")
        item_shape = flatten(item, out)
        if shape is None:
            shape = item_shape
        elif item_shape != shape:
            raise NotATensor("is not a rectangular nested list")
    assert shape is not None
    return (len(value), *shape)


def unflatten(flat: list[Any], shape: Sequence[int]) -> list[Any]:
    """Nest a fresh row-major slice back into ``shape`` (at least one dimension)."""
    if len(shape) == 1:
        return flat
    step = math.prod(shape[1:])
    return [unflatten(flat[start * step : (start + 1) * step], shape[1:]) for start in range(shape[0])]


def _guessed_datatype(values: list[Any]) -> str:
    """The datatype of a row's values (at least one) when the model declares none."""
    kinds = {type(value) for value in values}
    if kinds <= _NUMBERS:
        return "FP64"  # even for ints: an instance's tensor must not depend on its batchmates
    if kinds == {bool}:
        return "BOOL"
    if kinds == {str}:
        return "BYTES"
    if kinds <= SCALAR_TYPES:
        raise NotATensor(f"mixes {_kind_names(kinds)} values; a tensor holds one type")
    raise NotATensor(
        f"holds {_kind_names(kinds - SCALAR_TYPES)} values; tensors hold numbers, booleans or strings"
    )


def _converted(values: list[Any], datatype: str) -> list[Any]:
    """``values`` as JSON for a ``datatype`` tensor; raises :class:`NotATensor` for any it cannot hold."""
    kinds = {type(value) for value in values}
    if datatype in _INTEGER_RANGES:
        return _as_integers(values, kinds, datatype)
    if datatype in _FLOAT_MAX:
        _require_kinds(kinds, _NUMBERS, datatype)
        try:
            floats = [float(value) for value in values]
        except OverflowError:
            raise NotATensor(f"holds a number outside the {datatype} range") from None
        if floats and max(map(abs, floats)) > _FLOAT_MAX[datatype]:
            raise NotATensor(f"holds a number outside the {datatype} range")
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
            raise NotATensor(f"holds {fraction!r}, not a whole number as {datatype} needs")
        values = [int(value) for value in values]
    low, end = _INTEGER_RANGES[datatype]
    if values and (min(values) < low or max(values) >= end):
        raise NotATensor(f"holds an integer outside the {datatype} range")
    return values


def _require_kinds(kinds: set[type], allowed: frozenset[type], datatype: str) -> None:
    if not kinds <= allowed:
        raise NotATensor(f"holds {_kind_names(kinds - allowed)} values, the model takes {datatype}")


def _kind_names(kinds: set[type]) -> str:
    names = {type(None): "null", dict: "object", list: "list"}
    return ", ".join(sorted(names.get(kind, kind.__name__) for kind in kinds))
