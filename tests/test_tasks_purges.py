"""Purges and reclaims run by a real Celery worker (and its beat)."""

from __future__ import annotations

import pytest

from caching.models import PurgeRecord
from caching.runtime import get_runtime
from caching.services import model_upsert
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _entries(model) -> int:
    runtime = get_runtime()
    return sum(
        1
        for _ in runtime.client.scan_iter(
            match=runtime.keyspace.entry(runtime.keyspace.namespace(model.pk), "*")
        )
    )


def test_a_purge_has_its_memory_reclaimed_by_the_worker(on_worker, api, backend):
    model, _ = model_upsert(name="reclaimed", backend="http", target=backend.predict_url)
    api.predict("reclaimed", {"instances": [[1], [2], [3]]})
    assert _entries(model) == 3

    from caching.services import model_cache_purge

    model_cache_purge(model=model, requested_by="tests")

    wait_until(
        lambda: PurgeRecord.objects.get(model=model).reclaimed_at is not None,
        timeout=30,
        what="the reclaim task",
    )
    assert PurgeRecord.objects.get(model=model).entries_reclaimed == 3
    assert _entries(model) == 0
    assert "predcache.reclaim_model" in on_worker.log_text()
