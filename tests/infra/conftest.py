"""The `infra` fixture: fresh recording Pulumi mocks per test (the program is built inside the test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

try:
    import pulumi
except ImportError as missing:  # the app's .venv, not infra/.venv
    raise pytest.UsageError("tests/infra need infra/.venv: run them with `make test`") from missing

from tests.infra.mocks import InfraStack, RecordingMocks


@pytest.fixture
def infra() -> Iterator[InfraStack]:
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="predcache", stack="test", preview=False)
    yield InfraStack(mocks)
    pulumi.runtime.set_all_config({})
