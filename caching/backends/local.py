"""``local`` backend: a joblib model file under the configured model directory, loaded in process."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from caching.backends.base import (
    BackendConfigError,
    BackendRejectedInput,
    BackendResult,
    checked_result,
)

# path -> (file version, model): one loaded model per file, replaced when the file changes.
_LOADED: dict[Path, tuple[str, Any]] = {}
_LOAD_LOCK = threading.Lock()


def resolve_model_path(model_dir: Path, target: str) -> Path:
    """Resolve ``target`` inside ``model_dir``; refuse anything that escapes it."""
    root = model_dir.resolve()
    path = (root / target).resolve()
    if not path.is_relative_to(root) or path == root:
        raise BackendConfigError(f"model file {target!r} is outside the model directory {root}")
    return path


def load_model(path: Path) -> tuple[str, Any]:
    """The model in ``path`` and its file version, loading it only when the file changed."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise BackendConfigError(f"model file {path.name} cannot be read: {exc.strerror}") from exc
    version = f"{stat.st_mtime_ns}-{stat.st_size}"
    loaded = _LOADED.get(path)
    if loaded is not None and loaded[0] == version:
        return loaded
    with _LOAD_LOCK:
        loaded = _LOADED.get(path)
        if loaded is None or loaded[0] != version:
            import joblib  # deferred: only processes that serve local models pay for it

            try:
                model = joblib.load(path)
            except Exception as exc:  # joblib raises anything the pickled file's code raises
                raise BackendConfigError(f"model file {path.name} cannot be loaded: {exc}") from exc
            loaded = _LOADED[path] = (version, model)
    return loaded


class LocalBackend:
    """Runs a scikit-learn style estimator (``predict``/``predict_proba``) in the web process.

    The backend is bound to the model file as it was when the backend was built: its
    ``identity`` is that file version, so replacing the file starts a fresh cache and a
    prediction is never stored under another version of the model.
    """

    def __init__(self, target: str, *, model_dir: Path, method: str = "predict") -> None:
        if method not in ("predict", "predict_proba", "decision_function"):
            raise BackendConfigError(f"unsupported local model method {method!r}")
        path = resolve_model_path(model_dir, target)
        self.identity, self.model = load_model(path)
        if not callable(getattr(self.model, method, None)):
            raise BackendConfigError(f"the model in {path.name} has no {method}() method")
        self.method = method

    def predict(self, instances: Sequence[Any], parameters: dict[str, Any] | None) -> BackendResult:
        import numpy  # deferred: processes that only serve hits never pay for numpy

        expected = getattr(self.model, "n_features_in_", None)
        for index, instance in enumerate(instances):
            _check_instance(index, instance, expected)
        try:
            output = getattr(self.model, self.method)(numpy.asarray(instances, dtype=float))
        except ValueError as exc:
            raise BackendRejectedInput(f"model rejected the instances: {exc}") from exc
        return checked_result(BackendResult(predictions=output.tolist()), len(instances))


def _check_instance(index: int, instance: Any, expected: int | None) -> None:
    if not isinstance(instance, list) or not all(type(value) in (int, float) for value in instance):
        raise BackendRejectedInput(f"instance {index} must be a list of numbers")
    if expected is not None and len(instance) != expected:
        raise BackendRejectedInput(
            f"instance {index} has {len(instance)} features, the model expects {expected}"
        )
