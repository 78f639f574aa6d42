"""The in-process tier through gunicorn: hits with no Redis command, purges seen by every worker at once."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from django.core.management import call_command
from django.db import connection

from tests.support.gunicorn_server import GunicornServer, Response, database_url, gunicorn_server
from tests.support.processes import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)  # the servers read committed rows

WORKERS = 2
L1_DETAIL = "predcache; hit; detail=l1"


@pytest.fixture(scope="module")
def l1_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis only this module's server uses, so its command counts are the server's alone."""
    server = RedisServer(tmp_path_factory.mktemp("l1-redis")).start()
    yield server
    server.stop()


PREFIX = f"l1e2e-{uuid.uuid4().hex[:8]}:"


@pytest.fixture(scope="module")
def l1_server(
    l1_redis: RedisServer,
    django_db_setup: None,
    django_db_blocker: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GunicornServer]:
    with django_db_blocker.unblock():
        test_database = database_url(connection.settings_dict, connection.vendor)
    environment = {
        "DATABASE_URL": test_database,
        "REDIS_URL": l1_redis.url,
        "PREDCACHE_KEY_PREFIX": PREFIX,
        "WEB_CONCURRENCY": str(WORKERS),
        "GUNICORN_THREADS": "4",
    }
    with gunicorn_server(tmp_path_factory.mktemp("l1-gunicorn"), environment=environment) as server:
        yield server


@dataclass(frozen=True)
class Served:
    model: str
    key: str


@pytest.fixture
def l1_model(transactional_db: None, backend: Any, settings: Any, l1_redis: RedisServer) -> Iterator[Served]:
    from rest_framework_api_key.models import APIKey

    from caching.models import ModelEndpoint
    from caching.services import api_key_create, model_upsert

    settings.REDIS_URL = l1_redis.url  # this process purges what the server caches
    settings.PREDCACHE_KEY_PREFIX = PREFIX
    name = f"l1-{uuid.uuid4().hex[:8]}"
    try:
        model_upsert(name=name, backend="http", target=backend.predict_url, ttl_seconds=300, l1=True)
        yield Served(model=name, key=api_key_create(label=name))
    finally:
        ModelEndpoint.objects.filter(name=name).delete()
        APIKey.objects.filter(name=name).delete()


def prediction(response: Response) -> Any:
    assert response.status == 200, response.body[:300]
    return response.json()["predictions"][0]


def serve_from_l1_in_every_worker(server: GunicornServer, served: Served, document: Any) -> None:
    """Repeat ``document`` until each worker has answered it from its in-process tier."""
    deadline = time.monotonic() + 30
    workers: set[int] = set()
    while len(workers) < WORKERS:
        assert time.monotonic() < deadline, f"only workers {workers} answered from L1"
        before = len(server.served_by(served.model))
        response = server.predict(served.model, served.key, document)
        prediction(response)
        pids = _logged_after(server, served.model, before)
        if response.headers.get("Cache-Status") == L1_DETAIL:
            workers.add(pids[0])


def _logged_after(server: GunicornServer, model: str, before: int) -> list[int]:
    deadline = time.monotonic() + 10
    while len(pids := server.served_by(model)) <= before:
        assert time.monotonic() < deadline, "the access log did not show the request"
        time.sleep(0.005)
    return pids[before:]


def command_calls(client: redis.Redis) -> dict[str, int]:
    return {
        name.removeprefix("cmdstat_"): stats["calls"] for name, stats in client.info("commandstats").items()
    }


def test_with_l1_on_a_thousand_repeated_hits_make_no_redis_lookup(
    l1_server: GunicornServer, l1_redis: RedisServer, l1_model: Served
) -> None:
    document = {"instances": [{"l1": 1}, {"l1": 2}]}
    serve_from_l1_in_every_worker(l1_server, l1_model, document)
    observer = redis.Redis.from_url(l1_redis.url)
    before = command_calls(observer)

    answers = [l1_server.predict(l1_model.model, l1_model.key, document) for _ in range(1000)]

    after = command_calls(observer)
    ran = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    for response in answers:
        assert response.headers["Cache-Status"] == L1_DETAIL
        assert response.json()["predictions"] == [
            {"echo": {"l1": 1}, "parameters": None},
            {"echo": {"l1": 2}, "parameters": None},
        ]
    # No lookup (an MGET, or the locking lookup's EVALSHA) reached Redis: what ran is the
    # workers' own upkeep (stats flushes with the hot set's EVAL, heartbeats) and this INFO.
    assert not {"mget", "get", "evalsha"} & set(ran), ran
    assert sum(ran.values()) < 100, ran


def test_once_purge_returns_no_worker_serves_the_purged_prediction(
    l1_server: GunicornServer, l1_model: Served
) -> None:
    document = {"instances": [{"calls": "n"}]}  # each computation answers the model's call count
    serve_from_l1_in_every_worker(l1_server, l1_model, document)
    purged = prediction(l1_server.predict(l1_model.model, l1_model.key, document))

    answers: list[Response] = []
    lock, stop = threading.Lock(), threading.Event()

    def client() -> None:
        while not stop.is_set():
            response = l1_server.predict(l1_model.model, l1_model.key, document)
            with lock:
                answers.append(response)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        _wait_for(lambda: len(answers) >= 50, what="50 answers before the purge", lock=lock)
        called = time.monotonic()
        call_command("predcache", "purge", l1_model.model)
        returned = time.monotonic()
        _wait_for(
            lambda: sum(a.started > returned for a in answers) >= 200,
            what="200 answers after the purge",
            lock=lock,
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    before = [a for a in answers if a.started + a.seconds < called]
    after = [a for a in answers if a.started > returned]
    assert any(a.headers.get("Cache-Status") == L1_DETAIL for a in before)
    assert all(prediction(a) == purged for a in before)
    served_after = [prediction(a) for a in after]
    assert purged not in served_after, f"{served_after.count(purged)} of {len(after)} answers after the purge"
    # The tier took the recomputed prediction in again.
    assert any(a.headers.get("Cache-Status") == L1_DETAIL for a in after)


def _wait_for(check: Any, *, what: str, lock: threading.Lock, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with lock:
            if check():
                return
        assert time.monotonic() < deadline, f"not within {timeout:.0f}s: {what}"
        time.sleep(0.01)
