"""Shared fixtures: a real Redis (the machine's, or one we start), a real model server, API keys."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import urllib3
from django.test import Client

from tests.support.processes import RedisServer, model_server, redis_answers

# When we borrow a Redis that is not ours, we use our own database index and key prefix
# and delete only our keys afterwards; we never FLUSHDB or FLUSHALL it.
TEST_REDIS_DB = int(os.environ.get("PREDCACHE_TEST_REDIS_DB", "13"))
SESSION_PREFIX = f"pctest:{uuid.uuid4().hex[:8]}:"


def _shared_redis_url() -> str | None:
    explicit = os.environ.get("PREDCACHE_TEST_REDIS_URL")
    if explicit:
        return explicit
    base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
    candidate = redis.connection.parse_url(base)
    url = f"redis://{candidate.get('host', '127.0.0.1')}:{candidate.get('port', 6379)}/{TEST_REDIS_DB}"
    return url if redis_answers(url) else None


def pytest_report_header(config: pytest.Config) -> str:
    url = _shared_redis_url()
    return f"redis: {url} (key prefix {SESSION_PREFIX})" if url else "redis: embedded server (none answers)"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running Redis: the one configured or on 127.0.0.1:6379, else an embedded one."""
    url = _shared_redis_url()
    if url is not None:
        yield url
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{SESSION_PREFIX}*", count=1000))
        for start in range(0, len(keys), 500):
            client.unlink(*keys[start : start + 500])
        return
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _isolated_cache(settings: Any, redis_url: str) -> None:
    """Every test gets its own key prefix on the session's Redis."""
    settings.REDIS_URL = redis_url
    settings.PREDCACHE_KEY_PREFIX = f"{SESSION_PREFIX}{uuid.uuid4().hex[:8]}:"


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Redis Cluster of three primaries with a replica each (tests/support/redis_cluster.py)."""
    from tests.support.redis_cluster import RedisCluster, cluster_binary_problem

    problem = cluster_binary_problem()
    if problem is not None:
        pytest.skip(problem)
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def on_cluster(settings: Any, redis_cluster: Any) -> Any:
    """This test's predcache runs on the session's Redis Cluster: REDIS_CLUSTER=true, REDIS_URL one node."""
    settings.REDIS_URL = redis_cluster.url
    settings.PREDCACHE_REDIS_CLUSTER = True
    return redis_cluster


@pytest.fixture(scope="session")
def model_server_url() -> Iterator[str]:
    with model_server() as url:
        yield url


class ModelServer:
    """Test-side handle on the HTTP model server process."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.predict_url = f"{base_url}/predict"
        self._http = urllib3.PoolManager()

    def _post(self, path: str, document: Any) -> None:
        self._http.request("POST", f"{self.base_url}{path}", json=document)

    def reset(self) -> None:
        self._post("/reset", {})

    def reset_calls(self) -> None:
        """Forget the calls received so far, keeping the behaviour set by :meth:`control`."""
        self._post("/reset-calls", {})

    def control(self, **settings: Any) -> None:
        self._post("/control", settings)

    def release(self) -> None:
        """Let predict calls held by ``control(hold=True)`` answer."""
        self._post("/release", {})

    def calls(self) -> list[dict[str, Any]]:
        return self._http.request("GET", f"{self.base_url}/calls").json()["calls"]

    def peer_ports(self) -> list[int]:
        return self._http.request("GET", f"{self.base_url}/calls").json()["peer_ports"]

    def call_times(self) -> list[float]:
        """When each predict call arrived (Unix seconds), in order."""
        return self._http.request("GET", f"{self.base_url}/calls").json()["times"]


@pytest.fixture
def backend(model_server_url: str) -> ModelServer:
    server = ModelServer(model_server_url)
    server.reset()
    return server


@pytest.fixture
def api_key(db: None) -> str:
    from caching.services import api_key_create

    return api_key_create(label="tests")


@pytest.fixture
def http_model(db: None, backend: ModelServer) -> Any:
    from caching.services import model_upsert

    model, _ = model_upsert(name="echo", backend="http", target=backend.predict_url, ttl_seconds=300)
    return model


class ApiClient:
    """Posts predict requests the way a client application does."""

    def __init__(self, key: str) -> None:
        self.client = Client()
        self.key = key

    def predict(self, model: str, document: Any, **headers: str) -> Any:
        import orjson

        return self.client.post(
            f"/v1/models/{model}:predict",
            data=orjson.dumps(document),
            content_type="application/json",
            headers={"Authorization": f"Api-Key {self.key}", **headers},
        )


@pytest.fixture
def api(api_key: str) -> ApiClient:
    return ApiClient(api_key)


@pytest.fixture(scope="session")
def iris_model_file(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from scripts.train_demo_model import train

    return train(tmp_path_factory.mktemp("models") / "iris.joblib")


@pytest.fixture
def local_model(db: None, settings: Any, iris_model_file: Any) -> Any:
    from caching.services import model_upsert

    settings.PREDCACHE_MODEL_DIR = iris_model_file.parent
    model, _ = model_upsert(name="iris", backend="local", target=iris_model_file.name)
    return model


@pytest.fixture(scope="session")
def kserve_server_url() -> Iterator[str]:
    """Base URL of the Open Inference Protocol (KServe v2) test server, one process per session."""
    from tests.support.processes import kserve_server

    with kserve_server() as url:
        yield url


class KServeServer:
    """Test-side handle on the KServe v2 server process."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._http = urllib3.PoolManager()

    def infer_url(self, model: str = "adder", version: str | None = None) -> str:
        versioned = f"/versions/{version}" if version else ""
        return f"{self.base_url}/v2/models/{model}{versioned}/infer"

    def reset(self) -> None:
        self._http.request("POST", f"{self.base_url}/reset", json={})

    def control(self, **settings: Any) -> None:
        """``status``/``message`` to fail, ``answer`` (a document) or ``raw`` (text) to answer 200."""
        self._http.request("POST", f"{self.base_url}/control", json=settings)

    def calls(self) -> list[dict[str, Any]]:
        return self._http.request("GET", f"{self.base_url}/calls").json()["calls"]

    def paths(self) -> list[str]:
        return self._http.request("GET", f"{self.base_url}/calls").json()["paths"]


@pytest.fixture
def kserve(kserve_server_url: str) -> KServeServer:
    server = KServeServer(kserve_server_url)
    server.reset()
    return server


@pytest.fixture(scope="session")
def broker(redis_url: str) -> Any:
    """The Celery broker of this test run: the tests' Redis, under the run's key prefix, its own queue."""
    from tests.support.celery_worker import Broker, new_queue, use_broker

    session_broker = Broker(url=redis_url, key_prefix=f"{SESSION_PREFIX}celery:", queue=new_queue())
    use_broker(session_broker)
    return session_broker


@pytest.fixture(scope="module")
def celery(
    broker: Any, redis_url: str, django_db_setup: None, django_db_blocker: Any, tmp_path_factory: Any
) -> Iterator[Any]:
    """A real prefork Celery worker with an embedded beat, on the test database, for one test module.

    Tests that use it take ``on_worker`` too: the worker's key prefix, tasks sent to workers.
    """
    from tests.support.celery_worker import celery_worker
    from tests.support.gunicorn_server import environment_serving_the_test_database

    environment = {
        **environment_serving_the_test_database(django_db_blocker, redis_url, name="worker"),
        **broker.environment(),
    }
    with celery_worker(tmp_path_factory.mktemp("celery"), environment=environment, beat=True) as worker:
        worker.key_prefix = environment["PREDCACHE_KEY_PREFIX"]
        yield worker


@pytest.fixture
def on_worker(celery: Any, settings: Any, transactional_db: None) -> Any:
    """This test shares the worker's keys (its prefix) and sends background work to it."""
    settings.PREDCACHE_KEY_PREFIX = celery.key_prefix
    settings.PREDCACHE_BACKGROUND_IN_WORKERS = True
    return celery
