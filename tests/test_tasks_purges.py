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


@pytest.mark.django_db(transaction=True)  # the reclaim is queued when the purge commits
def test_a_purge_succeeds_when_the_broker_is_down(settings, api, backend, caplog, broker):
    """The purge is done before the reclaim is queued: an unreachable broker only loses the reclaim."""
    from caching.services import api_key_create
    from tests.support.celery_worker import Broker, use_broker
    from tests.support.processes import free_port

    admin_key = api_key_create(label="ops", may_administer=True)
    model, _ = model_upsert(name="nobroker", backend="http", target=backend.predict_url)
    api.predict("nobroker", {"instances": [[1]]})
    settings.PREDCACHE_BACKGROUND_IN_WORKERS = True
    from predcache_site.celery import app

    use_broker(Broker(f"redis://127.0.0.1:{free_port()}/0", "", "predcache-nowhere"))
    app.conf.broker_connection_timeout = 0.5
    app.conf.broker_connection_max_retries = 0
    try:
        response = api.client.post(
            "/v1/admin/models/nobroker:purge",
            data=b"{}",
            content_type="application/json",
            headers={"Authorization": f"Api-Key {admin_key}"},
        )
    finally:
        use_broker(broker)  # the session's
    assert response.status_code == 200, response.content
    assert PurgeRecord.objects.filter(model=model).count() == 1
    assert api.predict("nobroker", {"instances": [[1]]})["X-Cache"] == "MISS"
    assert "could not queue predcache.reclaim_model" in caplog.text
