"""Two installations (each with its own database) sharing one Redis and the default prefix share nothing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.gunicorn_server import GunicornServer, gunicorn_server
from tests.support.processes import REPO, free_port, wait_until

DOCUMENT = {"instances": [{"x": 1}, {"x": 2}]}


@dataclass
class Installation:
    """One predcache installation: its database, its API key and its running server."""

    environment: dict[str, str]
    key: str = ""
    server: GunicornServer | None = None

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env={"PATH": "/usr/bin:/bin", **self.environment},
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout

    def predict(self) -> str:
        assert self.server is not None
        response = self.server.predict("echo", self.key, DOCUMENT)
        assert response.status == 200, response.body
        return response.headers["X-Cache"]

    def stats(self) -> dict[str, Any]:
        return orjson.loads(self.manage("predcache", "stats", "echo", "--json"))


@pytest.fixture
def two_installations(tmp_path: Path, redis_url: str, settings: Any, model_server_url: str) -> Iterator[Any]:
    """Staging and production: separate SQLite databases, the same Redis, the same key prefix."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                _installation(tmp_path / name, redis_url, settings.PREDCACHE_KEY_PREFIX, model_server_url)
            )
            for name in ("staging", "production")
        ]


@contextmanager
def _installation(
    workdir: Path, redis_url: str, prefix: str, model_server_url: str
) -> Iterator[Installation]:
    workdir.mkdir()
    environment = {
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "REDIS_URL": redis_url,
        "PREDCACHE_KEY_PREFIX": prefix,
        "DJANGO_SECRET_KEY": "installation-test",
        "PREDCACHE_INSTALLATION_ID": "",  # the id its migrations stored, not the test suite's
    }
    manage = Installation(environment).manage
    manage("migrate", "-v0")
    # The same model name, and the same database id (1), in both installations.
    manage(
        "predcache",
        "models",
        "upsert",
        "echo",
        "--backend",
        "http",
        "--target",
        f"{model_server_url}/predict",
    )
    key = manage("predcache", "keys", "create", "tests").strip().splitlines()[-1]
    server_environment = {**environment, "WEB_CONCURRENCY": "1", "PREDCACHE_STATS_FLUSH_SECONDS": "0.05"}
    with gunicorn_server(workdir, environment=server_environment) as server:
        yield Installation(environment, key, server)


def test_a_purge_in_one_installation_leaves_the_others_entries_served(two_installations):
    staging, production = two_installations
    assert (staging.predict(), staging.predict()) == ("MISS", "HIT")
    assert (production.predict(), production.predict()) == ("MISS", "HIT")

    staging.manage("predcache", "purge", "echo", "--no-reclaim")

    assert production.predict() == "HIT"
    assert staging.predict() == "MISS"


def test_installations_keep_their_own_stats(two_installations):
    staging, production = two_installations
    for _ in range(3):
        staging.predict()
    production.predict()

    wait_until(lambda: staging.stats()["requests"] == 3, timeout=10, what="staging's stats flush")
    wait_until(lambda: production.stats()["requests"] == 1, timeout=10, what="production's stats flush")
    assert (staging.stats()["hits"], staging.stats()["misses"]) == (4, 2)
    assert (production.stats()["hits"], production.stats()["misses"]) == (0, 2)


def test_readyz_without_a_database_is_a_503_naming_it(tmp_path, redis_url):
    """The runtime names itself from the database: with none answering, readiness says so (no 500)."""
    environment = {
        "DATABASE_URL": f"postgres://nobody@127.0.0.1:{free_port()}/none",
        "REDIS_URL": redis_url,
        "DJANGO_SECRET_KEY": "installation-test",
        "PREDCACHE_INSTALLATION_ID": "",
    }
    with gunicorn_server(tmp_path, environment=environment) as server:
        response = server.request("GET", "/readyz")
    assert response.status == 503
    checks = response.json()["checks"]
    assert checks["database"].startswith("error:")
    assert checks["redis"] == "unknown: the database must answer first"


@pytest.mark.django_db
def test_an_installation_id_is_read_from_the_database_and_never_made_up(settings, client):
    from caching.installation import InstallationUnnamed, installation_id
    from caching.models import Installation

    settings.PREDCACHE_INSTALLATION_ID = ""
    stored = Installation.objects.get().installation_id  # made by the migration
    assert len(stored) == 12 and installation_id() == stored

    Installation.objects.all().delete()  # as `manage.py flush` does
    with pytest.raises(InstallationUnnamed, match=r"run `manage\.py migrate`"):
        installation_id()
    assert not Installation.objects.exists()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert (
        response.json()["checks"]["redis"] == "unknown: the database holds no installation id (run migrate)"
    )


def test_a_malformed_installation_id_stops_the_process_at_start(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SECRET_KEY": "x", "PREDCACHE_INSTALLATION_ID": "Prod.{1}"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "PREDCACHE_INSTALLATION_ID must be 1-32 lowercase letters and digits" in result.stderr
