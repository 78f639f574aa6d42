"""Celery workers on a Redis Cluster: the cache is the cluster, the broker a Redis of its own.

A real prefork worker runs with ``REDIS_CLUSTER=true`` (the session's cluster) and the tests'
broker (a plain Redis: a cluster cannot be one). It warms a set and reclaims a purge's
entries; this process reads what it left through the cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from caching.models import PurgeRecord, WarmRun
from caching.services import CLEAR, model_cache_purge, model_upsert
from caching.services.warm_sets import warm_set_upsert
from caching.services.warming import warm_set_enqueue
from tests.support.celery_worker import Worker, celery_worker
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def cluster_worker(
    broker: Any, redis_cluster: Any, django_db_setup: None, django_db_blocker: Any, tmp_path_factory: Any
) -> Iterator[Worker]:
    from tests.support.gunicorn_server import environment_serving_the_test_database

    environment = {
        **environment_serving_the_test_database(django_db_blocker, redis_cluster.url, name="cluster-worker"),
        **broker.environment(),
        "REDIS_CLUSTER": "true",
    }
    with celery_worker(tmp_path_factory.mktemp("cluster-worker"), environment=environment) as worker:
        worker.key_prefix = environment["PREDCACHE_KEY_PREFIX"]
        yield worker


@pytest.fixture
def on_cluster_worker(
    cluster_worker: Worker, on_cluster: Any, settings: Any, transactional_db: None
) -> Worker:
    """This test shares the worker's cluster and keys, and sends background work to it."""
    settings.PREDCACHE_KEY_PREFIX = cluster_worker.key_prefix
    settings.PREDCACHE_BACKGROUND_IN_WORKERS = True
    return cluster_worker


def test_a_worker_on_the_cluster_warms_a_set_and_reclaims_a_purge(on_cluster_worker, api, backend):
    model, _ = model_upsert(
        name="clustered", backend="http", target=backend.predict_url, warm_batch_size=50, warm_rate=CLEAR
    )
    warm_set, _ = warm_set_upsert(model=model, name="top", instances=[{"i": i} for i in range(120)])

    queued = warm_set_enqueue(warm_set=warm_set, requested_by="tests")
    wait_until(
        lambda: WarmRun.objects.get(pk=queued.pk).status in ("finished", "failed"),
        timeout=60,
        what="the warm",
    )

    run = WarmRun.objects.get(pk=queued.pk)
    assert (run.status, run.computed, run.errors) == ("finished", 120, 0)
    assert [len(call["instances"]) for call in backend.calls()] == [50, 50, 20]
    cached = api.predict(
        "clustered", {"instances": warm_set.instances}, **{"Cache-Control": "only-if-cached"}
    )
    assert (cached.status_code, cached["X-Cache"]) == (200, "HIT")

    record = model_cache_purge(model=model, requested_by="tests").record  # its reclaim goes to the worker
    wait_until(
        lambda: PurgeRecord.objects.get(pk=record.pk).reclaimed_at is not None, timeout=60, what="the reclaim"
    )
    assert PurgeRecord.objects.get(pk=record.pk).entries_reclaimed == 120
    assert api.predict("clustered", {"instances": [{"i": 0}]})["X-Cache"] == "MISS"
