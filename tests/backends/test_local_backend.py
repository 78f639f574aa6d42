"""The ``local`` backend: a joblib model under the model directory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from caching.backends.base import (
    BackendConfigError,
    BackendMisconfigured,
    BackendRejectedInput,
    BackendUnavailable,
)
from caching.backends.local import LocalBackend
from tests.backends.contract import BackendContract
from tests.support.processes import REPO

IRIS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


class TestLocalBackendContract(BackendContract):
    @pytest.fixture
    def backend(self, iris_model_file):
        return LocalBackend(iris_model_file.name, model_dir=iris_model_file.parent)

    @pytest.fixture
    def instances(self):
        return IRIS

    @pytest.fixture
    def rejected_instances(self):
        return [[1.0, 2.0]]


def test_iris_classes(iris_model_file):
    backend = LocalBackend(iris_model_file.name, model_dir=iris_model_file.parent)
    assert backend.predict(IRIS, None).predictions == [0, 2, 1]


def test_predict_proba_option(iris_model_file):
    backend = LocalBackend(iris_model_file.name, model_dir=iris_model_file.parent, method="predict_proba")
    probabilities = backend.predict(IRIS[:1], None).predictions[0]
    assert len(probabilities) == 3
    assert abs(sum(probabilities) - 1) < 1e-9


@pytest.mark.parametrize("target", ["../outside.joblib", "/etc/passwd", "a/../../b.joblib", ".", ""])
def test_paths_may_not_escape_the_model_directory(tmp_path, target):
    with pytest.raises(BackendConfigError):
        LocalBackend(target, model_dir=tmp_path / "models")


def test_symlink_out_of_the_directory_is_refused(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "secret.joblib").write_bytes(b"x")
    (tmp_path / "models" / "link.joblib").symlink_to(tmp_path / "secret.joblib")
    with pytest.raises(BackendConfigError):
        LocalBackend("link.joblib", model_dir=tmp_path / "models")


@pytest.mark.parametrize("instance", [[1, 2, 3, "x"], "abc", [True, 1, 2, 3], {"a": 1}, [[1, 2, 3, 4]]])
def test_non_numeric_instances_are_rejected(iris_model_file, instance):
    backend = LocalBackend(iris_model_file.name, model_dir=iris_model_file.parent)
    with pytest.raises(BackendRejectedInput):
        backend.predict([instance], None)


def test_a_missing_file_is_a_configuration_error(tmp_path):
    with pytest.raises(BackendConfigError, match="cannot be read"):
        LocalBackend("absent.joblib", model_dir=tmp_path)


@pytest.mark.parametrize("content", [b"not a joblib file", b""])
def test_a_file_that_is_not_a_model_fails_verification_and_prediction(tmp_path, content):
    (tmp_path / "broken.joblib").write_bytes(content)
    backend = LocalBackend("broken.joblib", model_dir=tmp_path)
    with pytest.raises(BackendConfigError, match="cannot be loaded"):
        backend.verify()
    with pytest.raises(BackendMisconfigured):
        backend.predict(IRIS, None)


def test_a_model_without_the_configured_method_fails_verification(iris_model_file):
    backend = LocalBackend(iris_model_file.name, model_dir=iris_model_file.parent, method="decision_function")
    backend.verify()  # LogisticRegression has it
    import joblib

    joblib.dump({"not": "an estimator"}, iris_model_file.parent / "dict.joblib")
    with pytest.raises(BackendConfigError, match="no predict"):
        LocalBackend("dict.joblib", model_dir=iris_model_file.parent).verify()


def test_building_the_backend_does_not_load_the_model(iris_model_file):
    """A process that only serves hits builds backends but never imports joblib or scikit-learn."""
    code = (
        "import sys; from pathlib import Path; from caching.backends.local import LocalBackend;"
        f"b = LocalBackend({iris_model_file.name!r}, model_dir=Path({str(iris_model_file.parent)!r}));"
        "print(b.identity, sorted(m for m in ('joblib', 'sklearn', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    identity, loaded = result.stdout.split(" ", 1)
    assert identity
    assert loaded.strip() == "[]"


def test_a_file_replaced_after_the_backend_was_built_is_not_served_under_the_old_identity(
    tmp_path, iris_model_file
):
    import os
    import shutil

    shutil.copy(iris_model_file, tmp_path / "m.joblib")
    stale = LocalBackend("m.joblib", model_dir=tmp_path)
    stat = (tmp_path / "m.joblib").stat()
    os.utime(tmp_path / "m.joblib", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    with pytest.raises(BackendUnavailable):
        stale.predict(IRIS, None)
    fresh = LocalBackend("m.joblib", model_dir=tmp_path)
    assert fresh.identity != stale.identity
    assert fresh.predict(IRIS, None).predictions == [0, 2, 1]
