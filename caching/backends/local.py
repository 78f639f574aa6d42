"""``local`` backend: a joblib model file under the configured model directory, loaded in process."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from caching.backends.base import (
    BackendConfigError,
    BackendError,
    BackendRejectedInput,
    BackendResult,
    checked_result,
)

_LOADED: dict[tuple[Path, int], Any] = {}
_LOAD_LOCK = threading.Lock()


def resolve_model_path(model_dir: Path, target: str) -> Path:
    """Resolve ``target`` inside ``model_dir``; refuse anything that escapes it."""
    root = model_dir.resolve()
    path = (root / target).resolve()
    if not path.is_relative_to(root) or path == root:
        raise BackendConfigError(f"model file {target!r} is outside the model directory {root}")
    return path


class LocalBackend:
    """Runs a scikit-learn style estimator (``predict``/``predict_proba``) in the web process."""

    def __init__(self, target: str, *, model_dir: Path, method: str = "predict") -> None:
        if method not in ("predict", "predict_proba", "decision_function"):
            raise BackendConfigError(f"unsupported local model method {method!r}")
        self.path = resolve_model_path(model_dir, target)
        self.method = method

    def predict(self, instances: Sequence[Any], parameters: dict[str, Any] | None) -> BackendResult:
        import numpy  # deferred: processes that only serve hits never pay for numpy

        model = self._model()
        expected = getattr(model, "n_features_in_", None)
        for index, instance in enumerate(instances):
            _check_instance(index, instance, expected)
        try:
            output = getattr(model, self.method)(numpy.asarray(instances, dtype=float))
        except ValueError as exc:
            raise BackendRejectedInput(f"model rejected the instances: {exc}") from exc
        return checked_result(BackendResult(predictions=output.tolist()), len(instances))

    def _model(self) -> Any:
        try:
            version = self.path.stat().st_mtime_ns
        except FileNotFoundError as exc:
            raise BackendError(f"model file {self.path.name} does not exist") from exc
        cache_key = (self.path, version)
        model = _LOADED.get(cache_key)
        if model is None:
            with _LOAD_LOCK:
                model = _LOADED.get(cache_key)
                if model is None:
                    import joblib

                    model = joblib.load(self.path)
                    _LOADED[cache_key] = model
        return model


def _check_instance(index: int, instance: Any, expected: int | None) -> None:
    if not isinstance(instance, list) or not all(type(value) in (int, float) for value in instance):
        raise BackendRejectedInput(f"instance {index} must be a list of numbers")
    if expected is not None and len(instance) != expected:
        raise BackendRejectedInput(
            f"instance {index} has {len(instance)} features, the model expects {expected}"
        )
