"""End to end through gunicorn, as deployed: separate server process, real HTTP, real Redis."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import uuid
from urllib.parse import quote

import orjson
import pytest
from django.db import connection

from tests.conftest import SESSION_PREFIX
from tests.support.processes import REPO, free_port, wait_until

# Asks pytest-django for the test database even when this module runs alone; the server
# process reads what the module fixture commits there.
pytestmark = pytest.mark.django_db


def _database_url() -> str:
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    user = quote(settings["USER"] or "")
    password = f":{quote(settings['PASSWORD'])}" if settings["PASSWORD"] else ""
    return f"postgres://{user}{password}@{settings['HOST']}:{settings['PORT'] or 5432}/{settings['NAME']}"


@pytest.fixture(scope="module")
def seeded(django_db_setup, django_db_blocker, model_server_url):
    """A model and key committed to the test database, removed after the module."""
    from rest_framework_api_key.models import APIKey

    from caching.models import ModelEndpoint
    from caching.services import api_key_create, model_upsert

    with django_db_blocker.unblock():
        model_upsert(name="e2e", backend="http", target=f"{model_server_url}/predict")
        key = api_key_create(label="e2e")
        yield key
        ModelEndpoint.objects.filter(name="e2e").delete()
        APIKey.objects.filter(name="e2e").delete()


@pytest.fixture(scope="module")
def server(seeded, redis_url, django_db_blocker):
    port = free_port()
    with django_db_blocker.unblock():
        database_url = _database_url()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PREDCACHE_KEY_PREFIX": f"{SESSION_PREFIX}e2e:",
        "DJANGO_SECRET_KEY": "e2e",
        "PYTHONPATH": str(REPO),
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "predcache_site/gunicorn_conf.py",
        "predcache_site.wsgi",
    ]
    env["GUNICORN_BIND"] = f"127.0.0.1:{port}"
    process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.DEVNULL)

    def healthy() -> bool:
        try:
            return request(port, "GET", "/healthz")[0] == 200
        except OSError:
            return False

    try:
        wait_until(healthy, timeout=30, what="gunicorn")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=15)


def request(port, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def predict(port, key, document, **headers):
    return request(
        port,
        "POST",
        "/v1/models/e2e:predict",
        body=orjson.dumps(document),
        headers={"Content-Type": "application/json", "Authorization": f"Api-Key {key}", **headers},
    )


def test_miss_then_hit_through_gunicorn(server, seeded, backend):
    document = {"instances": [{"id": uuid.uuid4().hex}]}
    status, headers, body = predict(server, seeded, document)
    assert (status, headers["X-Cache"]) == (200, "MISS")
    status, headers, again = predict(server, seeded, document)
    assert (status, headers["X-Cache"]) == (200, "HIT")
    assert again == body
    assert len(backend.calls()) == 1


def test_chunked_body_is_refused_with_411(server, seeded, backend):
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    connection.request(
        "POST",
        "/v1/models/e2e:predict",
        body=iter([b'{"instances": [1]}']),
        headers={"Content-Type": "application/json", "X-Api-Key": seeded},
        encode_chunked=True,
    )
    response = connection.getresponse()
    assert response.status == 411
    assert orjson.loads(response.read())["error"]["code"] == "length_required"
    assert backend.calls() == []


def test_disallowed_host_is_a_json_400(server):
    status, _, body = request(server, "GET", "/v1/schema", headers={"Host": "evil.example"})
    assert status == 400
    assert orjson.loads(body)["error"]["code"] == "bad_request"


def test_a_predict_request_to_a_host_not_allowed_is_a_json_400(server, seeded, backend):
    status, _, body = request(
        server,
        "POST",
        "/v1/models/e2e:predict",
        body=b'{"instances": [1]}',
        headers={"Host": "evil.example", "Content-Type": "application/json", "X-Api-Key": seeded},
    )
    assert status == 400
    assert orjson.loads(body)["error"]["code"] == "bad_request"
    assert backend.calls() == []


@pytest.mark.parametrize("path", ["/v1/models/%ff%fe:predict", "/v1/models/..%2f..%2fadmin:predict", "/v2/x"])
def test_odd_paths_are_json_404(server, seeded, path):
    status, headers, body = request(
        server,
        "POST",
        path,
        body=b'{"instances": [1]}',
        headers={"Content-Type": "application/json", "X-Api-Key": seeded},
    )
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert "error" in orjson.loads(body)


def test_bad_json_through_gunicorn(server, seeded, backend):
    status, _, body = request(
        server,
        "POST",
        "/v1/models/e2e:predict",
        body=b'{"instances": [NaN]}',
        headers={"Content-Type": "application/json", "X-Api-Key": seeded},
    )
    assert status == 400
    assert orjson.loads(body)["error"]["code"] == "invalid_json"
    assert backend.calls() == []
