"""Concurrency and failure end to end: gunicorn worker processes, the model server process, real Redis.

Single-flight across processes, a frozen Redis behind the circuit breaker, and policy edits
reaching running workers within the configuration cache time.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from django.db import connection

from caching.core.keys import KeySpace
from tests.conftest import SESSION_PREFIX, ModelServer
from tests.support.burst_model_server import burst_model_server
from tests.support.gunicorn_server import GunicornServer, Response, database_url, gunicorn_server
from tests.support.processes import RedisServer

WORKERS, THREADS = 4, 10
BURST = WORKERS * THREADS  # with --worker-connections THREADS, a burst this size needs every worker
CONFIG_CACHE_SECONDS = 1.0

# Rows must be committed for the servers to see them: no test transaction (the tables are
# flushed after each test instead). The marker also makes pytest-django create the test
# database when this module runs alone.
pytestmark = pytest.mark.django_db(transaction=True)


def eventually(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.01) -> float:
    """Poll ``check`` until it returns something truthy; returns the seconds that took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout:.1f}s: {what}")
        time.sleep(interval)
    return time.monotonic() - start


def cache_status(response: Response) -> str:
    """The response's X-Cache, or what it was instead (an error says why in the assertion)."""
    return response.headers.get("X-Cache") or f"HTTP {response.status}: {response.body[:300]!r}"


def echo(instance: Any) -> Any:
    """What the model server predicts for ``instance`` (no parameters)."""
    return {"echo": instance, "parameters": None}


class Burst:
    """``count`` client threads that send at the same moment (a barrier), each on its own connection."""

    def __init__(self, count: int, send: Callable[[], Response]) -> None:
        self._barrier = threading.Barrier(count)
        self._results: list[Response | BaseException | None] = [None] * count
        self._threads = [
            threading.Thread(target=self._run, args=(i, send), daemon=True) for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, index: int, send: Callable[[], Response]) -> None:
        try:
            self._barrier.wait(timeout=10)
            self._results[index] = send()
        except BaseException as exc:  # reported by join()
            self._results[index] = exc

    def finished(self) -> int:
        return sum(result is not None for result in self._results)

    def join(self, timeout: float = 30) -> list[Response]:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        failures = [result for result in self._results if not isinstance(result, Response)]
        assert not failures, f"{len(failures)} request(s) failed or hung: {failures[:3]}"
        return [result for result in self._results if isinstance(result, Response)]


@pytest.fixture(scope="module")
def model_server_url() -> Iterator[str]:
    """This module's own model server (``backend`` drives it): one that takes BURST calls at once."""
    with burst_model_server() as url:
        yield url


@dataclass(frozen=True)
class Seeded:
    key: str
    burst: str  # one model per test, so no test sees another's cache or policy
    batch: str
    redis: str
    policy: str
    admin: str
    fresh: str


@pytest.fixture
def seeded(transactional_db: None, model_server_url: str) -> Iterator[Seeded]:
    """Models and an API key committed to the test database (servers read it), removed afterwards."""
    from rest_framework_api_key.models import APIKey

    from caching.models import ModelEndpoint
    from caching.services import api_key_create, model_upsert

    suffix = uuid.uuid4().hex[:8]
    names = {role: f"cc-{role}-{suffix}" for role in ("burst", "batch", "redis", "policy", "admin", "fresh")}
    label = f"cc-{suffix}"
    try:
        for name in names.values():
            model_upsert(name=name, backend="http", target=f"{model_server_url}/predict")
        yield Seeded(key=api_key_create(label=label), **names)
    finally:
        ModelEndpoint.objects.filter(name__in=names.values()).delete()
        APIKey.objects.filter(name=label).delete()


@pytest.fixture(scope="module")
def test_database_url(django_db_setup: None, django_db_blocker: Any) -> str:
    with django_db_blocker.unblock():
        return database_url(connection.settings_dict, connection.vendor)


FARM_PREFIX = f"{SESSION_PREFIX}cc-farm:"


@pytest.fixture(scope="module")
def farm_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis only the farm uses."""
    server = RedisServer(tmp_path_factory.mktemp("farm-redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def farm(
    farm_redis: RedisServer, test_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornServer]:
    """WORKERS processes of THREADS threads; each holds at most THREADS connections at once."""
    environment = {
        "DATABASE_URL": test_database_url,
        "REDIS_URL": farm_redis.url,
        "PREDCACHE_KEY_PREFIX": FARM_PREFIX,
        "PREDCACHE_STATS_FLUSH_SECONDS": "0.05",  # the burst test watches the counters
        "WEB_CONCURRENCY": str(WORKERS),
        "GUNICORN_THREADS": str(THREADS),
        # Waiters must outlast the held backend call; a timed-out waiter would compute again.
        "PREDCACHE_SINGLE_FLIGHT_WAIT_SECONDS": "20",
        "PREDCACHE_CONFIG_CACHE_SECONDS": str(CONFIG_CACHE_SECONDS),
    }
    # A worker accepts no connection beyond THREADS, so none waits behind busy threads in
    # one process while another is idle: BURST requests in flight occupy every worker.
    arguments = ["--worker-connections", str(THREADS)]
    with gunicorn_server(
        tmp_path_factory.mktemp("farm"), environment=environment, arguments=arguments
    ) as server:
        yield server


@pytest.fixture(scope="module")
def pair(
    redis_url: str, test_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornServer]:
    """Two single-thread workers taking one connection each: two requests in flight are two processes."""
    environment = {
        "DATABASE_URL": test_database_url,
        "REDIS_URL": redis_url,
        "PREDCACHE_KEY_PREFIX": f"{SESSION_PREFIX}cc-pair-{uuid.uuid4().hex[:8]}:",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "1",
        "PREDCACHE_SINGLE_FLIGHT_WAIT_SECONDS": "20",
    }
    with gunicorn_server(
        tmp_path_factory.mktemp("pair"), environment=environment, arguments=["--worker-connections", "1"]
    ) as server:
        yield server


def _model_stat(client: redis.Redis, prefix: str, model: str, field: str) -> int:
    """One of a model's counters as its server's processes flushed them to Redis (see caching.core.stats)."""
    from caching.installation import installation_id
    from caching.models import ModelEndpoint

    keyspace = KeySpace(prefix, installation_id())
    namespace = keyspace.namespace(ModelEndpoint.objects.get(name=model).pk)
    return int(client.hget(keyspace.stats(namespace), field) or 0)


def _workers_that_served(server: GunicornServer, model: str, before: int, count: int) -> set[int]:
    """The worker pids of the ``count`` requests for ``model`` logged after the first ``before``."""
    eventually(
        lambda: len(server.served_by(model)) >= before + count,
        timeout=10,
        what=f"{count} access log lines for {model}",
    )
    return set(server.served_by(model)[before:])


# --- 1. single-flight across processes ----------------------------------------------------


def test_concurrent_identical_misses_in_every_worker_make_one_backend_call(
    farm: GunicornServer, farm_redis: RedisServer, seeded: Seeded, backend: ModelServer
) -> None:
    instance = {"id": uuid.uuid4().hex}
    stats = redis.Redis.from_url(farm_redis.url)

    def stat(field: str) -> int:
        return _model_stat(stats, FARM_PREFIX, seeded.burst, field)

    logged_before = len(farm.served_by(seeded.burst))
    backend.control(hold=True)  # the first backend call stays in flight until released
    burst = Burst(BURST, lambda: farm.predict(seeded.burst, seeded.key, {"instances": [instance]}))
    try:
        # All the others are waiting for the one computing, whose backend call is still held:
        # all BURST requests are in flight at once.
        eventually(
            lambda: stat("single_flight_waits") >= BURST - 1,
            timeout=15,
            what=f"{BURST - 1} requests waiting (finished early: {burst.finished()})",
        )
        assert burst.finished() == 0
        assert [call["instances"] for call in backend.calls()] == [[instance]]
    finally:
        backend.release()
        responses = burst.join()

    assert [response.status for response in responses] == [200] * BURST
    assert len({response.body for response in responses}) == 1
    assert responses[0].json()["predictions"] == [echo(instance)]
    calls = backend.calls()
    assert len(calls) == 1, f"{len(calls)} backend calls for {BURST} identical concurrent misses"
    assert calls[0]["instances"] == [instance]
    # The one that computed is a MISS; the others were answered from what it stored.
    assert Counter(cache_status(response) for response in responses) == {"MISS": 1, "HIT": BURST - 1}
    assert len(_workers_that_served(farm, seeded.burst, logged_before, BURST)) == WORKERS
    eventually(lambda: stat("requests") == BURST, timeout=5, what="the burst's counters flushed")
    assert (stat("single_flight_waits"), stat("single_flight_timeouts")) == (BURST - 1, 0)


class InFlight:
    """One request sent from a thread of its own; :meth:`result` waits for its response."""

    def __init__(self, send: Callable[[], Response]) -> None:
        self._result: Response | BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(send,), daemon=True)
        self._thread.start()

    def _run(self, send: Callable[[], Response]) -> None:
        try:
            self._result = send()
        except BaseException as exc:  # reported by result()
            self._result = exc

    def result(self, timeout: float = 30) -> Response:
        self._thread.join(timeout)
        assert isinstance(self._result, Response), f"request failed or hung: {self._result!r}"
        return self._result


def _two_held_requests(
    server: GunicornServer, model: str, key: str, backend: ModelServer, first: list[Any], second: list[Any]
) -> tuple[Response, Response, list[list[Any]]]:
    """``first`` held at the backend, then ``second`` sent; both released once both calls are made.

    Returns the two responses and the instances of each backend call made while both were held.
    """
    backend.control(hold=True)
    requests = []
    try:
        requests.append(InFlight(lambda: server.predict(model, key, {"instances": first})))
        eventually(lambda: len(backend.calls()) == 1, timeout=10, what="the first call at the backend")
        requests.append(InFlight(lambda: server.predict(model, key, {"instances": second})))
        eventually(lambda: len(backend.calls()) == 2, timeout=10, what="the second call at the backend")
        held = [call["instances"] for call in backend.calls()]
    finally:
        backend.release()
    return requests[0].result(), requests[1].result(), held


def test_a_batch_waits_only_for_the_instances_another_process_is_computing(
    pair: GunicornServer, seeded: Seeded, backend: ModelServer
) -> None:
    # A model in use already (see the next test for two first writers into a new one).
    assert pair.predict(seeded.batch, seeded.key, {"instances": [{"warm": 1}]}).status == 200
    backend.reset_calls()
    x, y = {"x": uuid.uuid4().hex}, {"y": uuid.uuid4().hex}
    logged_before = len(pair.served_by(seeded.batch))

    # B = [x, y] arrives while A's call for x is held: B computes y alone, without waiting.
    a, b, held = _two_held_requests(pair, seeded.batch, seeded.key, backend, [x], [x, y])
    assert held == [[x], [y]]

    assert (a.status, cache_status(a)) == (200, "MISS")
    assert a.json()["predictions"] == [echo(x)]
    # ... and takes x from what A stored.
    assert b.status == 200
    assert (cache_status(b), b.headers["X-Cache-Hits"], b.headers["X-Cache-Misses"]) == (
        "PARTIAL",
        "1",
        "1",
    )
    assert b.json()["predictions"] == [echo(x), echo(y)]
    assert [call["instances"] for call in backend.calls()] == [[x], [y]]
    assert len(_workers_that_served(pair, seeded.batch, logged_before, 2)) == 2


def test_two_first_writers_into_a_new_model_store_what_they_say_they_stored(
    pair: GunicornServer, seeded: Seeded, backend: ModelServer
) -> None:
    """Two processes make the first misses of a model nobody has used yet, at the same time.

    Each response's ``Cache-Status`` says whether its prediction was stored; a stored one
    must then be served (a HIT), not silently unreachable.
    """
    x, y = {"x": uuid.uuid4().hex}, {"y": uuid.uuid4().hex}
    a, b, held = _two_held_requests(pair, seeded.fresh, seeded.key, backend, [x], [y])
    assert held == [[x], [y]]
    assert (a.status, b.status) == (200, 200)
    said_stored = {
        name: response.headers["Cache-Status"].endswith("; stored") for name, response in (("x", a), ("y", b))
    }
    assert any(said_stored.values())

    repeats = {
        name: cache_status(pair.predict(seeded.fresh, seeded.key, {"instances": [instance]})) == "HIT"
        for name, instance in (("x", x), ("y", y))
    }
    assert repeats == said_stored, f"stored: {said_stored}, served from the cache: {repeats}"


# --- 2. Redis frozen ----------------------------------------------------------------------

SOCKET_TIMEOUT = 0.25
BREAKER_FAILURES = 2
BREAKER_RESET = 0.5


def test_a_frozen_redis_costs_no_timeout_per_request_once_the_breaker_is_open(
    seeded: Seeded, backend: ModelServer, test_database_url: str, tmp_path: Path
) -> None:
    own_redis = RedisServer(tmp_path / "redis").start()
    try:
        environment = {
            "DATABASE_URL": test_database_url,
            "REDIS_URL": own_redis.url,
            "PREDCACHE_KEY_PREFIX": "cc-frozen:",
            "WEB_CONCURRENCY": "1",  # one process, one breaker: it opens after exactly FAILURES requests
            "GUNICORN_THREADS": "4",
            "PREDCACHE_REDIS_SOCKET_TIMEOUT": str(SOCKET_TIMEOUT),
            "PREDCACHE_REDIS_CONNECT_TIMEOUT": str(SOCKET_TIMEOUT),
            "PREDCACHE_REDIS_BREAKER_FAILURES": str(BREAKER_FAILURES),
            "PREDCACHE_REDIS_BREAKER_RESET_SECONDS": str(BREAKER_RESET),
        }
        with gunicorn_server(tmp_path / "gunicorn", environment=environment) as server:
            _frozen_redis_scenario(server, own_redis, seeded, backend)
    finally:
        own_redis.stop()


def _frozen_redis_scenario(
    server: GunicornServer, own_redis: RedisServer, seeded: Seeded, backend: ModelServer
) -> None:
    def predict(instance: Any, **headers: str) -> Response:
        return server.predict(seeded.redis, seeded.key, {"instances": [instance]}, **headers)

    warm = {"warm": uuid.uuid4().hex}
    assert cache_status(predict(warm)) == "MISS"
    assert cache_status(predict(warm)) == "HIT"
    # The backend's latency as this server sees it: requests that never touch Redis.
    baseline = statistics.median(
        predict({"b": n}, **{"Cache-Control": "no-store"}).seconds for n in range(10)
    )

    assert own_redis.process is not None
    pid = own_redis.process.pid
    backend.reset_calls()
    os.kill(pid, signal.SIGSTOP)
    try:
        before_open = [predict({"n": n}) for n in range(BREAKER_FAILURES)]
        opened = time.monotonic()
        after_open: list[Response] = []
        while time.monotonic() - opened < 3 * BREAKER_RESET:  # several probe periods
            after_open.append(predict({"n": BREAKER_FAILURES + len(after_open)}))
        window = time.monotonic() - opened
    finally:
        os.kill(pid, signal.SIGCONT)

    frozen = before_open + after_open
    for n, response in enumerate(frozen):
        assert (response.status, cache_status(response)) == (200, "BYPASS")
        assert response.json()["predictions"] == [echo({"n": n})]
    assert len(backend.calls()) == len(frozen)
    # Before the breaker opened, each request waited out the socket timeout of the frozen Redis.
    assert min(response.seconds for response in before_open) >= 0.9 * SOCKET_TIMEOUT
    # After: no request pays more than one socket timeout (the breaker's probe, one per reset
    # period, pays one), and the typical one pays none.
    slowest = max(response.seconds for response in after_open)
    assert slowest < 2 * SOCKET_TIMEOUT, f"slowest {slowest:.3f}s"
    probes = [response for response in after_open if response.seconds >= 0.9 * SOCKET_TIMEOUT]
    assert len(probes) <= 1 + window / BREAKER_RESET, [round(r.seconds, 3) for r in after_open]
    median = statistics.median(response.seconds for response in after_open)
    assert median < baseline + SOCKET_TIMEOUT / 2, f"median {median:.3f}s, baseline {baseline:.3f}s"

    # Redis is back: after the reset period a probe succeeds, closes the breaker, and the
    # cache works again (the repeat of an instance is a HIT).
    again = {"again": uuid.uuid4().hex}
    eventually(
        lambda: cache_status(predict(again)) == "HIT",
        timeout=BREAKER_RESET + 2 * SOCKET_TIMEOUT + 3,
        what="a HIT after Redis came back",
        interval=0.02,
    )


# --- 3. policy edits while the server runs ------------------------------------------------


def test_a_policy_edit_reaches_every_worker_within_the_config_cache_time(
    farm: GunicornServer, seeded: Seeded, backend: ModelServer
) -> None:
    from caching.services import model_upsert

    document = {"instances": [{"policy": uuid.uuid4().hex}]}

    def x_cache() -> str:
        return cache_status(farm.predict(seeded.policy, seeded.key, document))

    assert x_cache() == "MISS"
    assert x_cache() == "HIT"
    model_upsert(name=seeded.policy, backend="http", target=backend.predict_url, mode="bypass")  # committed
    committed = time.monotonic()
    took = eventually(lambda: x_cache() == "BYPASS", timeout=5, what="X-Cache: BYPASS")
    assert took <= CONFIG_CACHE_SECONDS + 0.5

    # A worker trusts its copy of the settings for CONFIG_CACHE_SECONDS at most: wait out that
    # bound (the property under test), then every worker must bypass. Holding the backend keeps
    # BURST requests in flight, which spreads them over every worker.
    time.sleep(max(0.0, committed + CONFIG_CACHE_SECONDS + 0.2 - time.monotonic()))
    logged_before = len(farm.served_by(seeded.policy))
    backend.reset_calls()
    backend.control(hold=True)
    burst = Burst(BURST, lambda: farm.predict(seeded.policy, seeded.key, document))
    try:
        eventually(
            lambda: len(backend.calls()) + burst.finished() >= BURST,
            timeout=15,
            what="every request at the backend or answered",
        )
    finally:
        backend.release()
        responses = burst.join()
    assert Counter(cache_status(response) for response in responses) == {"BYPASS": BURST}
    assert len(backend.calls()) == BURST
    assert len(_workers_that_served(farm, seeded.policy, logged_before, BURST)) == WORKERS

    model_upsert(name=seeded.policy, backend="http", target=backend.predict_url, mode="cache")
    took = eventually(lambda: x_cache() == "HIT", timeout=5, what="X-Cache: HIT again")
    assert took <= CONFIG_CACHE_SECONDS + 0.5


class _FormFields(HTMLParser):
    """The fields a browser would submit from the form with id ``form_id``."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.fields: list[tuple[str, str]] = []
        self._in_form = False
        self._select: str | None = None
        self._options: list[tuple[str, bool]] = []
        self._textarea: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._in_form = attributes.get("id") == self.form_id
        if not self._in_form or ("name" not in attributes and tag != "option"):
            return
        if tag == "input":
            kind = attributes.get("type", "text")
            if kind in ("submit", "button", "image", "reset", "file"):
                return
            if kind in ("checkbox", "radio") and "checked" not in attributes:
                return
            self.fields.append(
                (attributes["name"], attributes.get("value", "on" if kind == "checkbox" else ""))
            )
        elif tag == "select":
            self._select, self._options = attributes["name"], []
        elif tag == "option" and self._select is not None:
            self._options.append((attributes.get("value", ""), "selected" in attributes))
        elif tag == "textarea":
            self._textarea, self._text = attributes["name"], ""

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "select" and self._select is not None:
            chosen = [value for value, selected in self._options if selected] or [self._options[0][0]]
            self.fields.append((self._select, chosen[0]))
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            self.fields.append((self._textarea, self._text.removeprefix("\n")))
            self._textarea = None


def test_a_policy_edited_in_the_admin_reaches_the_running_server(
    farm: GunicornServer, seeded: Seeded, backend: ModelServer
) -> None:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore

    from caching.models import CachePolicy, ModelEndpoint

    document = {"instances": [{"admin": uuid.uuid4().hex}]}

    def x_cache() -> str:
        return cache_status(farm.predict(seeded.admin, seeded.key, document))

    assert x_cache() == "MISS"
    assert x_cache() == "HIT"
    # A logged-in superuser: a session row, as the login view writes it (no password hashing).
    user = get_user_model().objects.create_superuser(
        username=f"cc-admin-{uuid.uuid4().hex[:8]}", email="", password=None
    )
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    model_pk = ModelEndpoint.objects.get(name=seeded.admin).pk
    try:
        path = f"/admin/caching/modelendpoint/{model_pk}/change/"
        page = farm.request("GET", path, headers={"Cookie": f"sessionid={session.session_key}"})
        assert page.status == 200, page.body[:300]
        form = _FormFields("modelendpoint_form")
        form.feed(page.body.decode())
        fields = dict(form.fields)
        assert fields["policy-0-mode"] == "cache"
        fields.update({"policy-0-mode": "bypass", "_save": "Save"})
        saved = farm.request(
            "POST",
            path,
            body=urlencode(fields).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": f"sessionid={session.session_key}; csrftoken={page.cookies['csrftoken']}",
            },
        )
        assert (saved.status, saved.headers.get("Location")) == (302, "/admin/caching/modelendpoint/"), (
            saved.body[:2000]
        )
        assert CachePolicy.objects.get(model_id=model_pk).mode == "bypass"
        # Only the worker that saved forgets its copy at once; the others within the config time.
        took = eventually(lambda: x_cache() == "BYPASS", timeout=5, what="X-Cache: BYPASS")
        assert took <= CONFIG_CACHE_SECONDS + 0.5
    finally:
        session.delete()
        user.delete()
