"""/metrics through gunicorn: two worker processes counted together, the token, the wipe at start."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caching.core.errors import STATUS
from tests.support.gunicorn_server import (
    GunicornServer,
    environment_serving_the_test_database,
    gunicorn_server,
)
from tests.support.metrics import Samples, samples, value
from tests.support.processes import REPO, wait_until

# The server process reads what the module fixture commits to the test database.
pytestmark = pytest.mark.django_db

TOKEN = "metrics-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RESULTS = {"hit", "miss", "stale", "bypass"}
CACHE_STATUSES = {"HIT", "MISS", "PARTIAL", "STALE"}

# A counter left by a process of a previous run (its pid no longer runs): the start must drop it.
_GHOST = """
import os
from prometheus_client import Counter
Counter("predcache_requests", "", ["model"], registry=None).labels("ghost").inc(7)
print(os.getpid())
"""


@pytest.fixture(scope="module")
def seeded(django_db_setup: None, django_db_blocker: Any, model_server_url: str) -> Iterator[str]:
    from rest_framework_api_key.models import APIKey

    from caching.models import ModelEndpoint
    from caching.services import api_key_create, model_upsert

    with django_db_blocker.unblock():
        for name in ("metrics-a", "metrics-b"):
            model_upsert(name=name, backend="http", target=f"{model_server_url}/predict", ttl_seconds=300)
        key = api_key_create(label="metrics-e2e")
        yield key
        ModelEndpoint.objects.filter(name__in=["metrics-a", "metrics-b"]).delete()
        APIKey.objects.filter(name="metrics-e2e").delete()


@pytest.fixture(scope="module")
def metrics_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's metrics directory, holding a dead process's counter file before the server starts."""
    path = tmp_path_factory.mktemp("prometheus")
    ghost = subprocess.run(
        [sys.executable, "-c", _GHOST],
        cwd=REPO,
        env={"PROMETHEUS_MULTIPROC_DIR": str(path), "PATH": ""},
        check=True,
        capture_output=True,
        text=True,
    )
    assert (path / f"counter_{ghost.stdout.strip()}.db").exists()
    return path


@pytest.fixture(scope="module")
def server(
    seeded: str,
    metrics_dir: Path,
    redis_url: str,
    django_db_blocker: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GunicornServer]:
    environment = {
        **environment_serving_the_test_database(django_db_blocker, redis_url, name="metrics"),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "PREDCACHE_METRICS_TOKEN": TOKEN,
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "2",
    }
    with gunicorn_server(tmp_path_factory.mktemp("metrics"), environment=environment) as running:
        yield running


def scrape(server: GunicornServer) -> Samples:
    """Every sample of /metrics, keyed by its name and labels."""
    response = server.request("GET", "/metrics", headers=AUTH)
    assert response.status == 200, response.body[:300]
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples(response.body)


def test_metrics_count_what_the_requests_did_across_two_workers(
    server: GunicornServer, seeded: str, backend: Any
) -> None:
    before = scrape(server)
    first, second = {"id": uuid.uuid4().hex}, {"id": uuid.uuid4().hex}
    statuses = [server.predict("metrics-a", seeded, {"instances": [first]}).headers["X-Cache"]]
    # Hits until both workers have served some: the scrape below, served by one, must count both.
    for _ in range(200):
        statuses.append(server.predict("metrics-a", seeded, {"instances": [first]}).headers["X-Cache"])
        if len(set(server.served_by("metrics-a:predict"))) == 2 and len(statuses) >= 3:
            break
    assert len(set(server.served_by("metrics-a:predict"))) == 2
    statuses.append(server.predict("metrics-a", seeded, {"instances": [first, second]}).headers["X-Cache"])
    bypass = server.predict(
        "metrics-b", seeded, {"instances": [first, second, 3]}, **{"Cache-Control": "no-store"}
    )
    statuses.append(bypass.headers["X-Cache"])
    hits = len(statuses) - 3
    assert statuses == ["MISS", *["HIT"] * hits, "PARTIAL", "BYPASS"]

    a, b = {"model": "metrics-a"}, {"model": "metrics-b"}
    expected = {
        ("predcache_requests_total", "metrics-a", ""): 1 + hits + 1,
        ("predcache_instances_total", "metrics-a", "hit"): hits + 1,  # and the PARTIAL's first
        ("predcache_instances_total", "metrics-a", "miss"): 2,
        ("predcache_instances_total", "metrics-a", "stale"): 0,
        ("predcache_instances_total", "metrics-a", "bypass"): 0,
        ("predcache_backend_calls_total", "metrics-a", ""): 2,
        ("predcache_request_seconds_count", "metrics-a", "HIT"): hits,
        ("predcache_request_seconds_count", "metrics-a", "MISS"): 1,
        ("predcache_request_seconds_count", "metrics-a", "PARTIAL"): 1,
        ("predcache_backend_seconds_count", "metrics-a", ""): 2,
        ("predcache_requests_total", "metrics-b", ""): 1,
        ("predcache_instances_total", "metrics-b", "bypass"): 3,
        ("predcache_backend_calls_total", "metrics-b", ""): 1,
    }
    label = {"predcache_instances_total": "result", "predcache_request_seconds_count": "cache"}
    seen: dict[tuple[str, str, str], float] = {}

    def counted() -> bool:
        # Each worker writes its tally of requests about once a second: wait for both.
        nonlocal seen, after
        after = scrape(server)
        seen = {
            (name, model, extra): value(after, name, model=model, **({label[name]: extra} if extra else {}))
            - value(before, name, model=model, **({label[name]: extra} if extra else {}))
            for name, model, extra in expected
        }
        return seen == expected

    after: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    with contextlib.suppress(RuntimeError):  # the assertion below shows what differs
        wait_until(counted, timeout=10, what="the workers' counts")
    assert seen == expected
    assert len(backend.calls()) == 3  # what the model server saw: the two misses and the bypass
    # The hits saved model time: priced at what the model's answered instances cost.
    saved = value(after, "predcache_backend_seconds_saved_total", **a)
    assert saved - value(before, "predcache_backend_seconds_saved_total", **a) > 0
    assert value(after, "predcache_backend_seconds_saved_total", **b) == 0  # bypassed: nothing saved


def test_labels_are_registered_model_names_and_fixed_sets(server: GunicornServer, seeded: str) -> None:
    for _ in range(20):  # names nobody registered: 404s, never a series
        assert server.predict(f"nope-{uuid.uuid4().hex}", seeded, {"instances": [1]}).status == 404
    server.predict("metrics-a", seeded, {"instances": [1]})
    samples = scrape(server)
    labels: dict[str, set[str]] = {}
    for name, pairs in samples:
        if name.startswith("predcache_"):
            for label, label_value in pairs:
                labels.setdefault(label, set()).add(label_value)
    assert labels["model"] <= {"metrics-a", "metrics-b"}
    assert labels["result"] <= RESULTS
    assert labels["cache"] <= CACHE_STATUSES
    assert labels.get("code", set()) <= {*STATUS, "circuit_open"}
    assert set(labels) <= {"model", "result", "cache", "code", "status", "le"}


def test_the_start_wiped_what_dead_processes_left(server: GunicornServer, metrics_dir: Path) -> None:
    samples = scrape(server)
    assert value(samples, "predcache_requests_total", model="ghost") == 0
    assert not any(("model", "ghost") in pairs for _, pairs in samples)
    assert list(metrics_dir.glob("*.db"))  # the workers' own files are there


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer"])
def test_a_scrape_without_the_token_is_a_json_401(server: GunicornServer, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = server.request("GET", "/metrics", headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "not_authenticated"
    assert b"predcache_" not in response.body


def test_a_scrape_by_address_with_the_token_is_answered(server: GunicornServer) -> None:
    # Prometheus scrapes a container by its address, a Host DJANGO_ALLOWED_HOSTS need not list.
    response = server.request("GET", "/metrics", headers={**AUTH, "Host": "10.1.2.3:8000"})
    assert response.status == 200
    assert b"# TYPE predcache_requests_total counter" in response.body
