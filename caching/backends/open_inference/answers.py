"""Open Inference Protocol: what an answer's output tensors mean, row by row, in the instances' order."""

from __future__ import annotations

import math
from typing import Any

from caching.backends.base import BackendError, BackendResult
from caching.backends.open_inference.tensors import SCALAR_TYPES, Batch, NotATensor, flatten, unflatten

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
        data_shape = list(flatten(data, flat))  # the protocol allows nested or flat data
    except NotATensor as exc:
        raise BackendError(f"{where} data {exc}") from None
    size = math.prod(shape)
    if data_shape != shape and data_shape != [size]:
        raise BackendError(f"{where} has {len(flat)} values for shape {shape}")
    if any(type(value) not in SCALAR_TYPES for value in flat):
        raise BackendError(f"{where} holds values that are not numbers, booleans or strings")
    row_shape = shape[1:]
    if not row_shape:
        return name, flat
    step = math.prod(row_shape)
    return name, [unflatten(flat[row * step : (row + 1) * step], row_shape) for row in range(batch_size)]
