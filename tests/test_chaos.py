"""Chaos on loopback: the parts predcache depends on fail under concurrent load, clients see no harm.

Each scenario runs a real gunicorn (two workers of four threads) with clients sending requests
from several threads while a dependency fails, and checks every answer the clients got:

- Redis killed (SIGKILL) and started again: no request fails, and caching resumes.
- The model server dropping connections mid-response or answering garbage: each request gets the
  right predictions or a 502/503/504 JSON error, never a 500, and nothing wrong is ever cached.

Two more chaos scenarios live beside the code they exercise: a Redis frozen with SIGSTOP
(``tests/test_concurrency_e2e.py``, latency bounded by the circuit breaker) and a Celery worker
killed mid-warm (``tests/test_tasks_warming.py``, a consistent cache and a retry that completes).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.support.faulty_model_server import FAULTS, FaultyModelServer, correct
from tests.support.gunicorn_server import GunicornServer, Response, database_url, gunicorn_server
from tests.support.processes import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)  # the servers read committed rows

CLIENTS = 6
SHORT_REDIS_TIMEOUTS = {
    "PREDCACHE_REDIS_SOCKET_TIMEOUT": "0.25",
    "PREDCACHE_REDIS_CONNECT_TIMEOUT": "0.25",
    "PREDCACHE_REDIS_BREAKER_FAILURES": "2",
    "PREDCACHE_REDIS_BREAKER_RESET_SECONDS": "0.3",
}


def eventually(check: Callable[[], Any], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.01)


@dataclass(frozen=True)
class Answer:
    instances: list[Any]
    response: Response

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def cache(self) -> str:
        return self.response.headers.get("X-Cache", "")


class Load:
    """Clients on ``CLIENTS`` threads, each sending predict requests until stopped; keeps every answer."""

    def __init__(
        self, send: Callable[[list[Any]], Response], instances: Callable[[random.Random], list[Any]]
    ) -> None:
        self._send, self._instances = send, instances
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.answers: list[Answer] = []
        self.failures: list[BaseException] = []  # a request that got no HTTP answer at all
        self._threads = [
            threading.Thread(target=self._client, args=(random.Random(seed),), daemon=True)
            for seed in range(CLIENTS)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _client(self, draw: random.Random) -> None:
        while not self._stop.is_set():
            instances = self._instances(draw)
            try:
                answer = Answer(instances, self._send(instances))
            except Exception as exc:  # kept for the assertion, which says what it was
                with self._lock:
                    self.failures.append(exc)
                continue
            with self._lock:
                self.answers.append(answer)

    def since(self, moment: float) -> list[Answer]:
        with self._lock:
            return [answer for answer in self.answers if answer.response.started >= moment]


@dataclass(frozen=True)
class Served:
    model: str
    key: str


def _serve(target: str) -> Iterator[Served]:
    from rest_framework_api_key.models import APIKey

    from caching.models import ModelEndpoint
    from caching.services import api_key_create, model_upsert

    suffix = uuid.uuid4().hex[:8]
    name, label = f"chaos-{suffix}", f"chaos-{suffix}"
    try:
        # A short timeout: a fault that leaves the server silent costs a request little.
        model_upsert(name=name, backend="http", target=target, timeout_seconds=2)
        yield Served(model=name, key=api_key_create(label=label))
    finally:
        ModelEndpoint.objects.filter(name=name).delete()
        APIKey.objects.filter(name=label).delete()


def _environment(redis_url: str, **more: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url(connection.settings_dict, connection.vendor),
        "REDIS_URL": redis_url,
        "PREDCACHE_KEY_PREFIX": f"chaos-{uuid.uuid4().hex[:8]}:",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "4",
        **more,
    }


# --- Redis killed and restarted ------------------------------------------------------------------


@pytest.fixture
def echo_model(transactional_db: None, backend: Any) -> Iterator[Served]:
    yield from _serve(backend.predict_url)


def test_redis_killed_and_restarted_under_load_loses_no_request_and_caching_resumes(
    echo_model: Served, tmp_path: Path
) -> None:
    redis_server = RedisServer(tmp_path / "redis").start()
    again = RedisServer(tmp_path / "redis-again", port=redis_server.port)  # the same address
    try:
        environment = _environment(redis_server.url, **SHORT_REDIS_TIMEOUTS)
        with gunicorn_server(tmp_path / "gunicorn", environment=environment) as server:
            _kill_and_restart_redis_under_load(server, redis_server, again, echo_model)
    finally:
        redis_server.stop()
        again.stop()


def _kill_and_restart_redis_under_load(
    server: GunicornServer, redis_server: RedisServer, again: RedisServer, served: Served
) -> None:
    def send(instances: list[Any]) -> Response:
        return server.predict(served.model, served.key, {"instances": instances})

    # Twenty instances asked again and again: most answers are hits while Redis is there.
    with Load(send, lambda draw: [{"n": draw.randrange(20)}]) as load:
        eventually(lambda: _count(load.since(0), "HIT") >= 50, timeout=30, what="50 hits before the kill")

        assert redis_server.process is not None
        redis_server.process.kill()  # SIGKILL: no goodbye to the clients of its connections
        redis_server.process.wait(timeout=10)
        killed = time.monotonic()
        eventually(
            lambda: _count(load.since(killed), "BYPASS") >= 30,
            timeout=30,
            what="30 answers from the model while Redis is down",
        )

        restarted = time.monotonic()
        again.start()
        eventually(
            lambda: _count(load.since(restarted), "HIT") >= 50,
            timeout=30,
            what="50 hits after Redis came back",
        )

    assert not load.failures, f"requests with no HTTP answer: {load.failures[:3]}"
    wrong = [
        (answer.status, answer.response.body[:200])
        for answer in load.answers
        if answer.status != 200 or answer.response.json()["predictions"] != _echoed(answer.instances)
    ]
    assert not wrong, f"{len(wrong)} of {len(load.answers)} answers failed or were wrong: {wrong[:3]}"
    down = [answer.cache for answer in load.since(killed) if answer.response.started < restarted]
    assert Counter(down)["BYPASS"] >= 30


def _count(answers: list[Answer], cache: str) -> int:
    return sum(1 for answer in answers if answer.cache == cache)


def _echoed(instances: list[Any]) -> list[Any]:
    """What the tests' model server predicts for ``instances`` (no parameters)."""
    return [{"echo": instance, "parameters": None} for instance in instances]


# --- the model server failing on the wire --------------------------------------------------------

FAULT_RATE = 0.4
EACH_FAULT_AT_LEAST = 3


@pytest.fixture
def faulty_server() -> Iterator[FaultyModelServer]:
    server = FaultyModelServer(fault_rate=FAULT_RATE, seed=20261207)
    yield server
    server.close()


@pytest.fixture
def faulty_model(transactional_db: None, faulty_server: FaultyModelServer) -> Iterator[Served]:
    yield from _serve(faulty_server.url)


def test_a_model_server_failing_mid_response_or_answering_garbage_gives_502s_and_caches_nothing_wrong(
    faulty_model: Served, faulty_server: FaultyModelServer, redis_url: str, tmp_path: Path
) -> None:
    # Faults that look like an unreachable server open the model's breaker, which then answers
    # 503 until its reset time: a short one keeps the model server called throughout.
    environment = _environment(redis_url, PREDCACHE_BACKEND_BREAKER_RESET_SECONDS="0.5")
    with gunicorn_server(tmp_path / "gunicorn", environment=environment) as server:

        def send(instances: list[Any]) -> Response:
            return server.predict(faulty_model.model, faulty_model.key, {"instances": instances})

        # Batches of one to three instances, each either one of forty asked again and again or
        # new: hits, misses and partial hits mix, and the model server keeps being called.
        def batch(draw: random.Random) -> list[Any]:
            return [
                {"i": draw.randrange(40)} if draw.random() < 0.5 else {"new": uuid.uuid4().hex}
                for _ in range(draw.randint(1, 3))
            ]

        with Load(send, batch) as load:
            eventually(
                lambda: all(faulty_server.sent[fault] >= EACH_FAULT_AT_LEAST for fault in FAULTS),
                timeout=60,
                what=f"each fault sent {EACH_FAULT_AT_LEAST} times: {faulty_server.sent}",
            )

        assert not load.failures, f"requests with no HTTP answer: {load.failures[:3]}"
        statuses = Counter(answer.status for answer in load.answers)
        assert set(statuses) <= {200, 502, 503, 504}, statuses
        assert statuses[200] > 0 and statuses[502] > 0, statuses
        for answer in load.answers:
            document = answer.response.json()
            if answer.status == 200:
                assert document["predictions"] == [correct(i) for i in answer.instances], answer.cache
            else:
                assert set(document["error"]) == {"code", "message"}, document
                assert "Traceback" not in document["error"]["message"]

        # The server behaves again: whatever the cache kept during the faults is right.
        faulty_server.fault_rate = 0
        hits = 0
        for number in range(40):
            response = send([{"i": number}])
            assert response.status == 200, response.body[:300]
            assert response.json()["predictions"] == [correct({"i": number})]
            hits += response.headers["X-Cache"] == "HIT"
        assert hits > 0  # the cache did keep what the good answers held
        assert "Internal Server Error" not in server.error_tail(400)
