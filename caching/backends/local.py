"""``local`` backend: a joblib model file under the configured model directory, loaded in process."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from caching.backends.base import (
    BackendConfigError,
    BackendMisconfigured,
    BackendRejectedInput,
    BackendResult,
    BackendUnavailable,
    checked_result,
)


def resolve_model_path(model_dir: Path, target: str) -> Path:
    """Resolve ``target`` inside ``model_dir``; refuse anything that escapes it."""
    root = model_dir.resolve()
    path = (root / target).resolve()
    if not path.is_relative_to(root) or path == root:
        raise BackendConfigError(f"model file {target!r} is outside the model directory {root}")
    return path


def file_version(path: Path) -> str:
    """Names one version of a file: it changes whenever the file is rewritten."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise BackendConfigError(f"model file {path.name} cannot be read: {exc.strerror}") from exc
    return f"{stat.st_mtime_ns}-{stat.st_size}"


def load_model(path: Path) -> tuple[str, Any]:
    """The model in ``path`` and the file version it was loaded from."""
    import joblib  # deferred: only processes that serve local models pay for it

    version = file_version(path)
    try:
        model = joblib.load(path)
    except Exception as exc:  # joblib raises anything the pickled file's code raises
        raise BackendConfigError(f"model file {path.name} cannot be loaded: {exc}") from exc
    if file_version(path) != version:
        raise BackendUnavailable(f"model file {path.name} changed while loading; retry")
    return version, model


class LocalBackend:
    """Runs a scikit-learn style estimator (``predict``/``predict_proba``) in the web process.

    The backend is bound to the model file as it was when the backend was built: its
    ``identity`` is that file version, so replacing the file starts a fresh cache. The file
    is loaded on the first miss, not before, so a process that serves only hits never
    imports joblib or the model's libraries.
    """

    def __init__(self, target: str, *, model_dir: Path, method: str = "predict") -> None:
        if method not in ("predict", "predict_proba", "decision_function"):
            raise BackendConfigError(f"unsupported local model method {method!r}")
        self.path = resolve_model_path(model_dir, target)
        self.identity = file_version(self.path)
        self.method = method
        self._model: Any = None
        self._load_lock = threading.Lock()

    def verify(self) -> None:
        self._load()

    def outdated(self) -> bool:
        """Whether the model file was replaced (or removed) since this backend was built."""
        try:
            return file_version(self.path) != self.identity
        except BackendConfigError:
            return True

    def check(self, instances: Sequence[Any], parameters: dict[str, Any] | None) -> None:
        """Lists of numbers, with the model's feature count once the model is loaded."""
        expected = getattr(self._model, "n_features_in_", None)
        for index, instance in enumerate(instances):
            _check_instance(index, instance, expected)

    def predict(self, instances: Sequence[Any], parameters: dict[str, Any] | None) -> BackendResult:
        import numpy  # deferred: processes that only serve hits never pay for numpy

        try:
            model = self._load()
        except BackendConfigError as exc:
            raise BackendMisconfigured(str(exc)) from exc
        expected = getattr(model, "n_features_in_", None)
        for index, instance in enumerate(instances):
            _check_instance(index, instance, expected)
        try:
            output = getattr(model, self.method)(numpy.asarray(instances, dtype=float))
        except ValueError as exc:
            raise BackendRejectedInput(f"model rejected the instances: {exc}") from exc
        return checked_result(BackendResult(predictions=output.tolist()), len(instances))

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        with self._load_lock:  # one load per backend even when many threads miss at once
            return self._load_once()

    def _load_once(self) -> Any:
        if self._model is None:
            version, model = load_model(self.path)
            if version != self.identity:
                # Replaced since this backend was built: its predictions would be cached
                # under the old file's identity. The next settings refresh (within
                # PREDCACHE_CONFIG_CACHE_SECONDS) builds a backend bound to the new file.
                raise BackendUnavailable(f"model file {self.path.name} is being replaced; retry")
            if not callable(getattr(model, self.method, None)):
                raise BackendConfigError(f"the model in {self.path.name} has no {self.method}() method")
            self._model = model
        return self._model


def _check_instance(index: int, instance: Any, expected: int | None) -> None:
    if not isinstance(instance, list) or not all(type(value) in (int, float) for value in instance):
        raise BackendRejectedInput("must be a list of numbers", instance=index)
    if expected is not None and len(instance) != expected:
        raise BackendRejectedInput(
            f"has {len(instance)} features, the model expects {expected}", instance=index
        )
