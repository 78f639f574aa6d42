"""API keys across processes: a gunicorn's two workers and this test process share one Redis and database.

A revoked key stops working in every worker within PREDCACHE_API_KEY_CACHE_SECONDS; a key's rate
limit holds for all processes together; a worker records the key's last use.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from caching.core.ratelimit import Rate
from tests.conftest import SESSION_PREFIX, ApiClient
from tests.support.gunicorn_server import GunicornServer, database_url, gunicorn_server

REMEMBERED_SECONDS = 2.0  # the server's PREDCACHE_API_KEY_CACHE_SECONDS
SERVER_PREFIX = f"{SESSION_PREFIX}keys-e2e-{uuid.uuid4().hex[:8]}:"
ONE_INSTANCE = {"instances": [[1]]}

# Rows must be committed for the server to see them.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server(
    redis_url: str, django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornServer]:
    """Two single-thread workers, each taking one connection at a time."""
    with django_db_blocker.unblock():
        test_database = database_url(connection.settings_dict, connection.vendor)
    environment = {
        "DATABASE_URL": test_database,
        "REDIS_URL": redis_url,
        "PREDCACHE_KEY_PREFIX": SERVER_PREFIX,
        "PREDCACHE_API_KEY_CACHE_SECONDS": str(REMEMBERED_SECONDS),
        "PREDCACHE_API_KEY_LAST_USED_SECONDS": "60",  # as in production (the tests' default is off)
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "1",
    }
    with gunicorn_server(
        tmp_path_factory.mktemp("keys-e2e"), environment=environment, arguments=["--worker-connections", "1"]
    ) as running:
        yield running


@dataclass(frozen=True)
class Seeded:
    model: str

    def key(self, **limits: Any) -> str:
        from caching.services import api_key_create

        return api_key_create(label=f"e2e-{uuid.uuid4().hex[:8]}", **limits)


@pytest.fixture
def seeded(transactional_db: None, model_server_url: str, settings: Any) -> Iterator[Seeded]:
    """A model committed to the test database; this process shares the server's keys in Redis."""
    from caching.models import ModelEndpoint
    from caching.services import model_upsert

    settings.PREDCACHE_KEY_PREFIX = SERVER_PREFIX
    name = f"keys-{uuid.uuid4().hex[:8]}"
    model_upsert(name=name, backend="http", target=f"{model_server_url}/predict")
    try:
        yield Seeded(model=name)
    finally:
        ModelEndpoint.objects.filter(name=name).delete()


def answered_by(server: GunicornServer, model: str, status: int) -> set[int]:
    """The workers that have answered ``status`` to a predict request on ``model`` so far."""
    return set(server.served_by(f"/{model}:predict", status))


def poll(server: GunicornServer, model: str, key: str, until: Any, *, seconds: float, what: str) -> None:
    """Send requests until ``until()`` holds (AssertionError past ``seconds``)."""
    deadline = time.monotonic() + seconds
    while not until():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        server.predict(model, key, ONE_INSTANCE)


def test_a_revoked_key_stops_working_in_every_worker_within_the_remembered_time(server, seeded):
    key = seeded.key()
    # Both workers verify the key and remember it.
    poll(
        server,
        seeded.model,
        key,
        lambda: len(answered_by(server, seeded.model, 200)) == 2,
        seconds=30,
        what="both workers served the key",
    )

    call_command("predcache", "keys", "revoke", key.split(".")[0])
    poll(
        server,
        seeded.model,
        key,
        lambda: len(answered_by(server, seeded.model, 401)) == 2,
        seconds=REMEMBERED_SECONDS + 10,  # the bound, and room for a busy machine's slow requests
        what="both workers refused the revoked key",
    )
    assert {server.predict(seeded.model, key, ONE_INSTANCE).status for _ in range(6)} == {401}


def test_a_rate_limit_holds_for_the_server_and_this_process_together(server, seeded):
    key = seeded.key(rate=Rate(5, 60))
    here = ApiClient(key)
    statuses, retry_after = [], []
    for turn in range(8):
        if turn % 2:
            response = here.predict(seeded.model, ONE_INSTANCE)
            status, headers = response.status_code, response.headers
        else:
            answer = server.predict(seeded.model, key, ONE_INSTANCE)
            status, headers = answer.status, answer.headers
        statuses.append(status)
        if status == 429:
            retry_after.append(int(headers["Retry-After"]))

    assert statuses == [200] * 5 + [429] * 3
    assert all(1 <= seconds <= 12 for seconds in retry_after)  # a token back every 12 s


def test_a_worker_records_the_keys_last_use(server, seeded):
    from caching.models import ApiKeyGrant

    key = seeded.key()
    assert server.predict(seeded.model, key, ONE_INSTANCE).status == 200
    grant = ApiKeyGrant.objects.get(api_key__prefix=key.split(".")[0])
    deadline = time.monotonic() + 30
    while grant.last_used_at is None:
        assert time.monotonic() < deadline, "the last use was not recorded"
        grant.refresh_from_db()
