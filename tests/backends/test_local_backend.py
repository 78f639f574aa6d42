"""The ``local`` backend: a joblib model under the model directory."""

from __future__ import annotations

import pytest

from caching.backends.base import BackendConfigError, BackendRejectedInput
from caching.backends.local import LocalBackend
from tests.backends.contract import BackendContract

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
