"""The contract every backend passes; a backend's test module subclasses it in a few lines."""

from __future__ import annotations

from typing import Any

import pytest

from caching.backends.base import Backend, BackendRejectedInput, BackendResult


class BackendContract:
    """Subclasses provide ``backend`` and ``instances`` fixtures (and ``expected`` predictions)."""

    @pytest.fixture
    def backend(self) -> Backend:
        raise NotImplementedError

    @pytest.fixture
    def instances(self) -> list[Any]:
        raise NotImplementedError

    @pytest.fixture
    def rejected_instances(self) -> list[Any]:
        raise NotImplementedError

    def test_one_prediction_per_instance_in_order(self, backend, instances):
        result = backend.predict(instances, None)
        assert isinstance(result, BackendResult)
        assert len(result.predictions) == len(instances)
        single = [backend.predict([instance], None).predictions[0] for instance in instances]
        assert result.predictions == single

    def test_reversed_batch_gives_reversed_predictions(self, backend, instances):
        forward = backend.predict(instances, None).predictions
        assert backend.predict(instances[::-1], None).predictions == forward[::-1]

    def test_predictions_are_plain_json(self, backend, instances):
        import orjson

        predictions = backend.predict(instances, None).predictions
        assert orjson.loads(orjson.dumps(predictions)) == predictions

    def test_invalid_instances_are_rejected_as_the_clients_fault(self, backend, rejected_instances):
        with pytest.raises(BackendRejectedInput):
            backend.predict(rejected_instances, None)

    def test_a_working_configuration_verifies_and_names_its_identity(self, backend, instances):
        backend.verify()
        assert isinstance(backend.identity, str)
        assert backend.predict(instances, None).predictions  # verify left it able to serve
