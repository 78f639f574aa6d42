"""IAM authentication (REDIS_IAM_AUTH): each new connection logs in with a current OAuth access token.

Memorystore checks the token against IAM; here a real redis-server checks it as the password of
user ``default``, and the test rotates both together. The Google credentials are the test's own
(:class:`ScriptedCredentials`, a google-auth ``Credentials``): nothing calls Google.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import google.auth
import pytest
import redis
from google.auth.credentials import Credentials
from google.auth.exceptions import RefreshError

from caching.core.iam_auth import CLOUD_PLATFORM_SCOPE, IamTokenCredentials
from caching.core.store import redis_client
from caching.runtime import get_runtime, reset_runtime
from tests.support.processes import RedisServer
from tests.support.redis_cluster import RedisCluster
from tests.support.tls import make_test_pki, tls_problem


class ScriptedCredentials(Credentials):
    """Google credentials whose refreshes hand out the given tokens in turn, each valid ``lifetime``."""

    def __init__(self, *tokens: str, lifetime: timedelta = timedelta(hours=1)) -> None:
        super().__init__()
        self.tokens = list(tokens)
        self.lifetime = lifetime
        self.refreshes = 0

    def refresh(self, request: object) -> None:
        if not self.tokens:
            raise RefreshError("no more tokens (as when the metadata server cannot be reached)")
        self.token = self.tokens.pop(0)
        # google-auth keeps expiry as naive UTC.
        self.expiry = (datetime.now(UTC) + self.lifetime).replace(tzinfo=None)
        self.refreshes += 1

    def expire(self) -> None:
        self.expiry = (datetime.now(UTC) - timedelta(seconds=1)).replace(tzinfo=None)


@pytest.fixture
def guarded(tmp_path) -> Iterator[RedisServer]:
    """A redis-server whose user ``default`` has the password ``token-1`` (an IAM token, to it)."""
    server = RedisServer(tmp_path / "redis").start()
    with redis.Redis(port=server.port) as admin:
        admin.config_set("requirepass", "token-1")
    try:
        yield server
    finally:
        server.stop()


def rotate(server: RedisServer, *, old: str, new: str) -> None:
    """What IAM does as tokens change: the new one is accepted; connections already in stay in."""
    rotate_on(redis.Redis(port=server.port, password=old), new=new)


def rotate_on(admin: redis.Redis, *, new: str) -> None:
    with admin:
        admin.execute_command("ACL", "SETUSER", "default", "resetpass", f">{new}")


def test_each_new_connection_logs_in_with_the_current_token(guarded):
    credentials = ScriptedCredentials("token-1", "token-2")
    client = redis_client(
        guarded.url, socket_timeout=2, connect_timeout=2, credential_provider=IamTokenCredentials(credentials)
    )
    with client:
        assert client.set("pctest:iam", b"1")
        client.connection_pool.disconnect()
        assert client.get("pctest:iam") == b"1"  # a second connection: the token is still valid
        assert credentials.refreshes == 1

        rotate(guarded, old="token-1", new="token-2")
        assert client.get("pctest:iam") == b"1"  # the open connection stays logged in
        client.connection_pool.disconnect()
        with pytest.raises(redis.AuthenticationError):
            client.get("pctest:iam")  # a new one with the old token is refused: the token is checked

        credentials.expire()
        client.connection_pool.disconnect()
        assert client.get("pctest:iam") == b"1"  # refreshed first: logged in with token-2
        assert credentials.refreshes == 2
        assert client.acl_whoami() == "default"


def test_a_token_about_to_expire_is_refreshed_before_a_connection_uses_it():
    credentials = ScriptedCredentials("first", "second", lifetime=timedelta(minutes=2))
    provider = IamTokenCredentials(credentials)  # refreshes when under five minutes are left

    assert provider.get_credentials() == ("default", "first")
    assert provider.get_credentials() == ("default", "second")

    credentials.tokens, credentials.lifetime = ["third"], timedelta(hours=1)
    assert provider.get_credentials() == ("default", "third")
    assert provider.get_credentials() == ("default", "third")  # fresh for an hour: not asked again
    assert credentials.refreshes == 3


def test_no_token_is_a_redis_authentication_error_so_requests_fail_open(guarded):
    client = redis_client(
        guarded.url,
        socket_timeout=2,
        connect_timeout=2,
        credential_provider=IamTokenCredentials(ScriptedCredentials()),
    )
    with client, pytest.raises(redis.AuthenticationError, match="no IAM access token for Redis"):
        client.ping()


@pytest.fixture
def google_default(monkeypatch) -> ScriptedCredentials:
    """The process's Google credentials, as google.auth.default finds them (asked for cloud-platform)."""
    credentials = ScriptedCredentials("token-1", "token-2")

    def default(scopes=None, **kwargs):
        assert scopes == [CLOUD_PLATFORM_SCOPE]
        return credentials, "test-project"

    monkeypatch.setattr(google.auth, "default", default)
    return credentials


@pytest.mark.django_db
def test_predictions_are_cached_with_iam_auth_across_a_token_rotation(
    settings, guarded, google_default, api, backend, http_model, client
):
    settings.REDIS_URL = guarded.url
    settings.PREDCACHE_REDIS_IAM_AUTH = True
    assert client.get("/readyz").json()["checks"]["redis"] == "ok"
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"

    rotate(guarded, old="token-1", new="token-2")
    google_default.expire()
    reset_runtime()  # a new process: every connection is new

    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"
    assert google_default.refreshes == 2
    assert len(backend.calls()) == 1
    assert get_runtime().client.acl_whoami() == "default"


@pytest.mark.django_db
def test_without_a_token_predictions_come_from_the_model(
    settings, guarded, monkeypatch, api, backend, http_model
):
    monkeypatch.setattr(google.auth, "default", lambda **kwargs: (ScriptedCredentials(), "test-project"))
    settings.REDIS_URL = guarded.url
    settings.PREDCACHE_REDIS_IAM_AUTH = True

    response = api.predict("echo", {"instances": [[1]]})

    assert (response.status_code, response["X-Cache"]) == (200, "BYPASS")
    assert response.json()["predictions"] == [{"echo": [1], "parameters": None}]


@pytest.fixture
def memorystore_like(tmp_path) -> Iterator[RedisCluster]:
    """A cluster as Memorystore's: TLS only with its own CA, and user default's password a token."""
    problem = tls_problem()
    if problem is not None:
        pytest.skip(problem)
    pki = make_test_pki(tmp_path / "pki")
    cluster = RedisCluster(tmp_path / "cluster", replicas=0, pki=pki, password="token-1").start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.django_db
def test_a_tls_cluster_with_its_ca_and_iam_tokens_end_to_end(
    settings, memorystore_like, google_default, api, backend, http_model, client
):
    """What the Pulumi stack's redisCluster option sets: REDIS_CLUSTER, REDIS_IAM_AUTH, REDIS_CA_CERT."""
    assert memorystore_like.pki is not None
    settings.REDIS_URL = memorystore_like.url  # rediss://: TLS
    settings.PREDCACHE_REDIS_CLUSTER = True
    settings.PREDCACHE_REDIS_IAM_AUTH = True
    settings.PREDCACHE_REDIS_CA_CERT = memorystore_like.pki.ca_pem
    settings.PREDCACHE_REDIS_TLS_CHECK_HOSTNAME = False  # the default with a pinned CA (settings.py)

    assert client.get("/readyz").json()["checks"]["redis"] == "ok"
    assert api.predict("echo", {"instances": [[1], [2]]})["X-Cache"] == "MISS"
    assert api.predict("echo", {"instances": [[1], [2]]})["X-Cache"] == "HIT"

    for node in memorystore_like.nodes:
        rotate_on(node.client(), new="token-2")
    google_default.expire()
    reset_runtime()  # a new process: new connections to every node, each with the new token

    assert api.predict("echo", {"instances": [[1], [2]]})["X-Cache"] == "HIT"
    assert client.get("/readyz").json()["checks"]["redis"] == "ok"
    assert google_default.refreshes == 2
    assert len(backend.calls()) == 1
