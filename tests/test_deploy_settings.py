"""Cloud connection settings: Memorystore (TLS, AUTH, server CA) and Cloud SQL from the environment."""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from caching.core.store import redis_client
from caching.runtime import get_runtime
from tests.support.processes import REPO, free_port, wait_until
from tests.support.stack_env import STACK_SECURITY_ENV
from tests.support.tls import make_test_pki, tls_problem

# What the variables below may not inherit from the machine running the tests.
_CONNECTION_VARIABLES = ("REDIS_", "DATABASE_", "PREDCACHE_REDIS_", "CELERY_")
FAKE_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----"


def settings_under(environment: dict[str, str], *names: str) -> dict[str, Any]:
    """The named settings as a fresh process reads them with ``environment`` set."""
    completed = _run_settings(environment, names)
    assert completed.returncode == 0, completed.stderr
    return dict(json.loads(completed.stdout))


def settings_error(environment: dict[str, str]) -> str:
    """The error that stops a fresh process from reading the settings with ``environment`` set."""
    completed = _run_settings(environment, ("REDIS_URL",))
    assert completed.returncode != 0
    return completed.stderr


def _run_settings(environment: dict[str, str], names: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    code = (
        "import json, sys\n"
        "from django.conf import settings\n"
        "print(json.dumps({name: getattr(settings, name) for name in sys.argv[1:]}, default=str))\n"
    )
    inherited = {key: value for key, value in os.environ.items() if not key.startswith(_CONNECTION_VARIABLES)}
    return subprocess.run(
        [sys.executable, "-c", code, *names],
        cwd=REPO,
        env={
            **inherited,
            "DJANGO_SETTINGS_MODULE": "predcache_site.settings",
            "DJANGO_SECRET_KEY": "test-only",
            **environment,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


REDIS_NAMES = (
    "REDIS_URL",
    "PREDCACHE_REDIS_PASSWORD",
    "PREDCACHE_REDIS_CA_CERT",
    "PREDCACHE_REDIS_TLS_CHECK_HOSTNAME",
    "CELERY_BROKER_URL",
)


# --- settings ---------------------------------------------------------------------------


def deploy_check(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``manage.py check --deploy --fail-level WARNING`` in a fresh process, production-like."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", *_CONNECTION_VARIABLES))
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env={
            **inherited,
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": "k" + secrets.token_urlsafe(60),  # as the stack's: long and random
            "DJANGO_ALLOWED_HOSTS": "predcache.example.com",
            "DJANGO_CSRF_TRUSTED_ORIGINS": "https://predcache.example.com",
            **environment,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_settings_the_pulumi_stack_sets_pass_djangos_deployment_checks():
    checked = deploy_check(STACK_SECURITY_ENV)
    assert checked.returncode == 0, checked.stderr
    assert "no issues" in checked.stdout
    # Without the stack's settings the same check fails, naming what is missing.
    bare = deploy_check({})
    assert bare.returncode != 0
    assert "security.W004" in bare.stderr and "security.W008" in bare.stderr  # HSTS, SSL redirect


def test_local_defaults_are_unchanged():
    found = settings_under({}, *REDIS_NAMES, "DATABASES")
    assert found["REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert found["PREDCACHE_REDIS_PASSWORD"] == ""
    assert found["PREDCACHE_REDIS_CA_CERT"] == ""
    assert found["PREDCACHE_REDIS_TLS_CHECK_HOSTNAME"] is True
    assert found["CELERY_BROKER_URL"] == found["REDIS_URL"]
    database = found["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.sqlite3"
    assert database["NAME"].endswith("var/predcache.sqlite3")


def test_memorystore_with_auth_and_the_server_ca_as_separate_secrets():
    found = settings_under(
        {
            "REDIS_URL": "rediss://10.0.0.3:6378/0",
            "REDIS_AUTH": "auth-string",
            "REDIS_CA_CERT": FAKE_PEM + "\n",
        },
        *REDIS_NAMES,
    )
    assert found == {
        "REDIS_URL": "rediss://10.0.0.3:6378/0",
        "PREDCACHE_REDIS_PASSWORD": "auth-string",
        "PREDCACHE_REDIS_CA_CERT": FAKE_PEM,
        # The CA is the instance's own, so the chain proves the server; see settings.py.
        "PREDCACHE_REDIS_TLS_CHECK_HOSTNAME": False,
        # The broker is the same Redis: kombu takes the AUTH string in the URL only.
        "CELERY_BROKER_URL": "rediss://:auth-string@10.0.0.3:6378/0",
    }


def test_the_broker_in_the_caches_redis_gets_its_tls_ca_as_a_file(tmp_path):
    found = settings_under(
        {"REDIS_URL": "rediss://10.0.0.3:6378/0", "REDIS_CA_CERT": FAKE_PEM},
        "CELERY_BROKER_USE_SSL",
    )["CELERY_BROKER_USE_SSL"]
    assert found["ssl_check_hostname"] is False and found["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert Path(found["ssl_ca_certs"]).read_text() == FAKE_PEM


def test_a_redis_cluster_is_not_taken_for_the_broker():
    assert "a Redis Cluster cannot be the Celery broker: set CELERY_BROKER_URL" in settings_error(
        {"REDIS_URL": "redis://10.0.0.3:6379/0", "REDIS_CLUSTER": "true"}
    )


def test_iam_authentication_wants_no_password_and_a_broker_of_its_own():
    assert "REDIS_IAM_AUTH sends IAM tokens: set no REDIS_PASSWORD" in settings_error(
        {"REDIS_URL": "rediss://10.0.0.3:6378/0", "REDIS_IAM_AUTH": "true", "REDIS_PASSWORD": "x"}
    )
    assert "the Celery broker cannot log in with IAM tokens" in settings_error(
        {"REDIS_URL": "rediss://10.0.0.3:6378/0", "REDIS_IAM_AUTH": "true"}
    )


def test_the_redis_cluster_stacks_settings_are_read():
    """What the Pulumi stack's redisCluster option sets: a cluster, IAM tokens, and a TLS broker apart."""
    found = settings_under(
        {
            "REDIS_URL": "rediss://10.20.0.9:6379/0",
            "REDIS_CLUSTER": "true",
            "REDIS_IAM_AUTH": "true",
            "REDIS_CA_CERT": FAKE_PEM,
            "CELERY_BROKER_URL": "rediss://:broker-auth@10.77.0.6:6378/0",
            "CELERY_BROKER_CA_CERT": FAKE_PEM,
        },
        "PREDCACHE_REDIS_CLUSTER",
        "PREDCACHE_REDIS_IAM_AUTH",
        "PREDCACHE_REDIS_TLS_CHECK_HOSTNAME",
        "CELERY_BROKER_URL",
        "CELERY_BROKER_USE_SSL",
    )
    assert (found["PREDCACHE_REDIS_CLUSTER"], found["PREDCACHE_REDIS_IAM_AUTH"]) == (True, True)
    assert found["PREDCACHE_REDIS_TLS_CHECK_HOSTNAME"] is False
    assert found["CELERY_BROKER_URL"] == "rediss://:broker-auth@10.77.0.6:6378/0"
    tls = found["CELERY_BROKER_USE_SSL"]
    assert tls["ssl_cert_reqs"] == ssl.CERT_REQUIRED and tls["ssl_check_hostname"] is False
    assert Path(tls["ssl_ca_certs"]).name == "broker-ca.pem"
    assert Path(tls["ssl_ca_certs"]).read_text() == FAKE_PEM


def test_a_broker_ca_needs_a_tls_broker():
    assert "CELERY_BROKER_CA_CERT needs a rediss:// CELERY_BROKER_URL" in settings_error(
        {"CELERY_BROKER_URL": "redis://10.77.0.6:6379/0", "CELERY_BROKER_CA_CERT": FAKE_PEM}
    )


def test_a_broker_given_apart_is_left_as_given():
    found = settings_under(
        {
            "REDIS_URL": "rediss://10.0.0.3:6378/0",
            "REDIS_AUTH": "a",
            "CELERY_BROKER_URL": "amqp://guest@mq//",
        },
        "CELERY_BROKER_URL",
    )
    assert found == {"CELERY_BROKER_URL": "amqp://guest@mq//"}


def test_redis_password_is_an_alias_and_auth_wins():
    assert settings_under({"REDIS_PASSWORD": "p"}, "PREDCACHE_REDIS_PASSWORD") == {
        "PREDCACHE_REDIS_PASSWORD": "p"
    }
    both = settings_under({"REDIS_PASSWORD": "p", "REDIS_AUTH": "a"}, "PREDCACHE_REDIS_PASSWORD")
    assert both == {"PREDCACHE_REDIS_PASSWORD": "a"}


def test_ca_certificate_with_escaped_newlines_as_in_a_one_line_env_file():
    found = settings_under(
        {"REDIS_URL": "rediss://h:6378/0", "REDIS_CA_CERT": FAKE_PEM.replace("\n", "\\n")},
        "PREDCACHE_REDIS_CA_CERT",
    )
    assert found == {"PREDCACHE_REDIS_CA_CERT": FAKE_PEM}


def test_ca_certificate_as_a_file_path(tmp_path):
    ca_file = tmp_path / "server-ca.pem"
    ca_file.write_text(FAKE_PEM)
    found = settings_under(
        {"REDIS_URL": "rediss://h:6378/0", "REDIS_CA_CERT": str(ca_file)},
        "PREDCACHE_REDIS_CA_CERT",
        "PREDCACHE_REDIS_TLS_CHECK_HOSTNAME",
    )
    assert found == {"PREDCACHE_REDIS_CA_CERT": str(ca_file), "PREDCACHE_REDIS_TLS_CHECK_HOSTNAME": False}


def test_host_name_check_can_be_turned_on_with_a_pinned_ca():
    found = settings_under(
        {
            "REDIS_URL": "rediss://redis.internal:6378/0",
            "REDIS_CA_CERT": FAKE_PEM,
            "PREDCACHE_REDIS_TLS_CHECK_HOSTNAME": "true",
        },
        "PREDCACHE_REDIS_TLS_CHECK_HOSTNAME",
    )
    assert found == {"PREDCACHE_REDIS_TLS_CHECK_HOSTNAME": True}


def test_ca_certificate_misconfigurations_stop_start_up(tmp_path):
    missing = str(tmp_path / "nowhere.pem")
    assert "neither PEM text nor the path of a file" in settings_error(
        {"REDIS_URL": "rediss://h:6378/0", "REDIS_CA_CERT": missing}
    )
    assert "needs a rediss:// REDIS_URL" in settings_error(
        {"REDIS_URL": "redis://h:6379/0", "REDIS_CA_CERT": FAKE_PEM}
    )


def test_celery_broker_can_be_set_apart():
    found = settings_under(
        {"REDIS_URL": "redis://cache:6379/0", "CELERY_BROKER_URL": "redis://broker:6379/1"},
        "CELERY_BROKER_URL",
    )
    assert found == {"CELERY_BROKER_URL": "redis://broker:6379/1"}


def test_cloud_sql_unix_socket_with_the_password_apart():
    found = settings_under(
        {
            "DATABASE_URL": "postgres://predcache@/predcache?host=/cloudsql/proj:us-central1:predcache-db",
            "DATABASE_PASSWORD": "db-secret",
        },
        "DATABASES",
    )
    database = found["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert database["HOST"] == "/cloudsql/proj:us-central1:predcache-db"
    assert "host" not in database.get("OPTIONS", {})
    assert (database["NAME"], database["USER"], database["PASSWORD"]) == (
        "predcache",
        "predcache",
        "db-secret",
    )


def test_cloud_sql_private_ip_password_apart_wins_over_the_url():
    found = settings_under(
        {
            "DATABASE_URL": "postgres://predcache:in-url@10.20.0.5:5432/predcache?sslmode=require",
            "DATABASE_PASSWORD": "db-secret",
        },
        "DATABASES",
    )
    database = found["DATABASES"]["default"]
    assert (database["HOST"], database["PORT"], database["PASSWORD"]) == ("10.20.0.5", 5432, "db-secret")
    assert database["OPTIONS"] == {"sslmode": "require"}


# --- the client factory, without a server -----------------------------------------------


def _kwargs(client: redis.Redis) -> dict[str, Any]:
    return dict(client.connection_pool.connection_kwargs)


def test_plain_urls_get_no_tls_options():
    client = redis_client("redis://127.0.0.1:6379/13", socket_timeout=0.25, connect_timeout=0.5)
    kwargs = _kwargs(client)
    assert client.connection_pool.connection_class is redis.Connection
    assert not any(name.startswith("ssl_") for name in kwargs)
    assert (kwargs["db"], kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (13, 0.25, 0.5)
    assert "password" not in kwargs


def test_rediss_with_pem_password_and_no_host_name_check():
    client = redis_client(
        "rediss://:stale-in-url@10.0.0.3:6378/0",
        socket_timeout=0.25,
        connect_timeout=0.25,
        password="auth-string",
        tls_ca_cert=FAKE_PEM,
        tls_check_hostname=False,
    )
    kwargs = _kwargs(client)
    assert client.connection_pool.connection_class is redis.SSLConnection
    assert kwargs["password"] == "auth-string"
    assert (kwargs["ssl_cert_reqs"], kwargs["ssl_ca_data"], kwargs["ssl_check_hostname"]) == (
        "required",
        FAKE_PEM,
        False,
    )
    assert "ssl_ca_certs" not in kwargs


def test_rediss_with_a_ca_file_and_the_system_cas():
    with_file = _kwargs(
        redis_client("rediss://h:6378/0", socket_timeout=1, connect_timeout=1, tls_ca_cert="/ca.pem")
    )
    assert with_file["ssl_ca_certs"] == "/ca.pem"
    assert "ssl_ca_data" not in with_file
    system = _kwargs(redis_client("rediss://h:6378/0", socket_timeout=1, connect_timeout=1))
    assert system["ssl_cert_reqs"] == "required"
    assert system["ssl_check_hostname"] is True
    assert "ssl_ca_data" not in system and "ssl_ca_certs" not in system


def test_a_ca_certificate_without_tls_is_refused():
    with pytest.raises(ValueError, match="rediss://"):
        redis_client("redis://h:6379/0", socket_timeout=1, connect_timeout=1, tls_ca_cert=FAKE_PEM)


def test_runtime_passes_the_settings_to_the_factory(settings, db):
    settings.REDIS_URL = f"rediss://127.0.0.1:{free_port()}/0"
    settings.PREDCACHE_REDIS_PASSWORD = "auth-string"
    settings.PREDCACHE_REDIS_CA_CERT = FAKE_PEM
    settings.PREDCACHE_REDIS_TLS_CHECK_HOSTNAME = False
    client = get_runtime().client
    kwargs = _kwargs(client)
    assert client.connection_pool.connection_class is redis.SSLConnection
    assert (kwargs["password"], kwargs["ssl_ca_data"], kwargs["ssl_check_hostname"]) == (
        "auth-string",
        FAKE_PEM,
        False,
    )


# --- a real TLS Redis, like Memorystore with SERVER_AUTHENTICATION and AUTH --------------


@dataclass
class TlsRedis:
    port: int
    password: str
    ca_pem: str
    other_ca_pem: str

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """A redis-server with TLS only, AUTH on, and a certificate naming its IP only as the CN."""
    problem = tls_problem()
    if problem is not None:
        pytest.skip(problem)
    workdir = tmp_path_factory.mktemp("tls-redis")
    pki = make_test_pki(workdir)
    server = TlsRedis(
        port=free_port(),
        password="memorystore-auth-string",
        ca_pem=pki.ca_pem,
        other_ca_pem=pki.other_ca_pem,
    )
    process = subprocess.Popen(
        [
            "redis-server", "--port", "0", "--tls-port", str(server.port), "--bind", "127.0.0.1",
            *pki.server_arguments(),
            "--requirepass", server.password, "--save", "", "--appendonly", "no", "--dir", str(workdir),
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip

    def answers() -> bool:
        if process.poll() is not None:
            return True  # exited: reported below
        client = redis_client(
            server.url,
            socket_timeout=1,
            connect_timeout=1,
            password=server.password,
            tls_ca_cert=server.ca_pem,
            tls_check_hostname=False,
        )
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()

    try:
        wait_until(answers, timeout=10, what="the TLS redis-server")
        if process.poll() is not None:
            assert process.stderr is not None
            pytest.skip(f"redis-server cannot serve TLS here: {process.stderr.read().decode()[-300:]}")
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


def test_tls_with_the_pinned_ca_and_auth_apart(tls_redis):
    client = redis_client(
        f"rediss://:wrong-password-in-url@127.0.0.1:{tls_redis.port}/0",
        socket_timeout=1,
        connect_timeout=1,
        password=tls_redis.password,
        tls_ca_cert=tls_redis.ca_pem,
        tls_check_hostname=False,
    )
    with client:
        assert client.set("pctest:tls", b"ok", ex=10)
        assert client.get("pctest:tls") == b"ok"
        assert client.delete("pctest:tls") == 1


def test_tls_refuses_a_server_whose_certificate_does_not_chain_to_the_ca(tls_redis):
    client = redis_client(
        tls_redis.url,
        socket_timeout=1,
        connect_timeout=1,
        password=tls_redis.password,
        tls_ca_cert=tls_redis.other_ca_pem,
        tls_check_hostname=False,
    )
    with client, pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        client.ping()


def test_tls_host_name_check_refuses_an_ip_named_only_in_the_cn(tls_redis):
    # Why the check is off by default when the CA is pinned (see settings.py).
    client = redis_client(
        tls_redis.url,
        socket_timeout=1,
        connect_timeout=1,
        password=tls_redis.password,
        tls_ca_cert=tls_redis.ca_pem,
    )
    with client, pytest.raises(redis.ConnectionError, match="IP address mismatch"):
        client.ping()


def test_tls_without_the_auth_string_is_refused(tls_redis):
    client = redis_client(
        tls_redis.url,
        socket_timeout=1,
        connect_timeout=1,
        tls_ca_cert=tls_redis.ca_pem,
        tls_check_hostname=False,
    )
    with client, pytest.raises(redis.AuthenticationError):
        client.ping()


@pytest.mark.django_db
def test_predictions_are_cached_through_tls_redis(settings, tls_redis, api, backend, http_model, client):
    settings.REDIS_URL = tls_redis.url
    settings.PREDCACHE_REDIS_PASSWORD = tls_redis.password
    settings.PREDCACHE_REDIS_CA_CERT = tls_redis.ca_pem
    settings.PREDCACHE_REDIS_TLS_CHECK_HOSTNAME = False
    assert client.get("/readyz").json()["checks"] == {"database": "ok", "redis": "ok"}
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"
    assert len(backend.calls()) == 1
