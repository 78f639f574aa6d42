"""A Redis Cluster primary killed under load: its replica takes over, no request fails, caching resumes.

The slowest cluster test (about 20 s): a gunicorn of two workers serves clients on several
threads from a cluster of its own (three primaries, a replica each, a one-second node timeout),
and the primary holding one model's slot gets SIGKILL. Marked ``cluster_failover``: CI runs it
(``make test``); skip it locally with ``-m "not cluster_failover"`` or
``PREDCACHE_SKIP_CLUSTER_FAILOVER=1``.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.crc import key_slot

from tests.support.gunicorn_server import (
    GunicornServer,
    Response,
    environment_serving_the_test_database,
    gunicorn_server,
)
from tests.support.redis_cluster import RedisCluster, cluster_binary_problem, wait_for

pytestmark = [
    pytest.mark.cluster_failover,
    pytest.mark.skipif(
        os.environ.get("PREDCACHE_SKIP_CLUSTER_FAILOVER", "") not in ("", "0"),
        reason="PREDCACHE_SKIP_CLUSTER_FAILOVER is set",
    ),
    # Rows must be committed for gunicorn to see them.
    pytest.mark.django_db(transaction=True),
]

CLIENTS = 6
INSTANCES = 20  # per model: most requests are hits once each has been asked once


@pytest.fixture
def cluster(tmp_path) -> Iterator[RedisCluster]:
    problem = cluster_binary_problem()
    if problem is not None:
        pytest.skip(problem)
    # A node unreachable for a second is failed; its replica is elected within a few more.
    own = RedisCluster(tmp_path / "cluster", node_timeout_ms=1000).start()
    try:
        yield own
    finally:
        own.stop()


@dataclass
class Seeded:
    key: str
    models: list[Any]


@pytest.fixture
def seeded(transactional_db: None, backend: Any) -> Seeded:
    from caching.services import api_key_create, model_upsert

    models = [
        model_upsert(name=f"failover{index}", backend="http", target=backend.predict_url)[0]
        for index in range(6)
    ]
    return Seeded(key=api_key_create(label="failover"), models=models)


@pytest.fixture
def server(cluster, seeded, redis_url, django_db_blocker, tmp_path) -> Iterator[GunicornServer]:
    environment = {
        **environment_serving_the_test_database(django_db_blocker, redis_url, name="failover"),
        "REDIS_URL": cluster.url,
        "REDIS_CLUSTER": "true",
        "CELERY_BROKER_URL": redis_url,  # never a Redis Cluster; nothing is sent to it here
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": str(CLIENTS),
        # The breaker probes Redis again soon after it opens, so caching resumes quickly.
        "PREDCACHE_REDIS_BREAKER_RESET_SECONDS": "0.5",
    }
    with gunicorn_server(tmp_path / "gunicorn", environment=environment) as running:
        running.key_prefix = environment["PREDCACHE_KEY_PREFIX"]  # type: ignore[attr-defined]
        yield running


@dataclass
class Load:
    """CLIENTS threads asking every model for its INSTANCES in turn, until stopped; every answer kept."""

    server: GunicornServer
    seeded: Seeded
    answers: list[tuple[float, str, Any, Response]] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(CLIENTS)]
        for thread in self._threads:
            thread.start()

    def _run(self, number: int) -> None:
        requests = itertools.cycle(
            (model.name, [number, index]) for index in range(INSTANCES) for model in self.seeded.models
        )
        while not self.stop.is_set():
            name, instance = next(requests)
            try:
                response = self.server.predict(name, self.seeded.key, {"instances": [instance]})
            except BaseException as exc:  # reported by the test
                with self._lock:
                    self.failures.append(exc)
                continue
            with self._lock:
                self.answers.append((time.monotonic(), name, instance, response))

    def hits_since(self, moment: float, model: str) -> int:
        with self._lock:
            return sum(
                1
                for at, name, _, response in self.answers
                if at > moment and name == model and response.headers.get("X-Cache") == "HIT"
            )

    def finish(self) -> list[tuple[float, str, Any, Response]]:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        return self.answers


def test_a_primary_killed_under_load_fails_no_request_and_caching_resumes_on_its_promoted_replica(
    cluster, seeded, server
):
    from caching.core.keys import KeySpace

    keyspace = KeySpace(server.key_prefix, "tests")  # type: ignore[attr-defined]
    victim_model = seeded.models[0]
    slot = key_slot(keyspace.namespace(victim_model.pk).encode())
    primary = cluster.node_of_slot(slot)
    replica = cluster.replica_of(primary)
    load = Load(server, seeded)
    try:
        wait_for(lambda: load.hits_since(0, victim_model.name) >= 20, timeout=60, what="hits before the kill")

        cluster.kill(primary)
        killed_at = time.monotonic()
        wait_for(lambda: cluster.node_of_slot(slot) is replica, timeout=30, what="the replica promoted")
        promoted_at = time.monotonic()
        wait_for(
            lambda: load.hits_since(promoted_at, victim_model.name) >= 20,
            timeout=30,
            what="hits of the model again, from the promoted replica",
        )
    finally:
        answers = load.finish()

    assert load.failures == []
    wrong = [
        (name, instance, response.status, response.body[:200])
        for _, name, instance, response in answers
        if response.status != 200
        or response.json()["predictions"] != [{"echo": instance, "parameters": None}]
    ]
    assert wrong == []
    during = Counter(
        response.headers["X-Cache"] for at, _, _, response in answers if killed_at <= at < promoted_at
    )
    after = Counter(response.headers["X-Cache"] for at, _, _, response in answers if at >= promoted_at)
    assert after["HIT"] >= 20, (during, after)
    # And the promoted replica takes new entries.
    new = uuid.uuid4().hex
    first = server.predict(victim_model.name, seeded.key, {"instances": [new]})
    second = server.predict(victim_model.name, seeded.key, {"instances": [new]})
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
