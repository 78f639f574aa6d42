"""The staff management API: ``POST /v1/admin/models/{model}:purge``."""

from __future__ import annotations

import orjson
import pytest
from django.contrib.auth.models import User
from django.test import Client

from caching.models import PurgeRecord, PurgeScope
from caching.runtime import get_runtime
from caching.services import api_key_create
from tests.support.processes import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_key(db):
    return api_key_create(label="ops", may_administer=True)


def purge(
    model: str, body, *, key: str | None = None, client: Client | None = None, raw: bytes | None = None
):
    headers = {"Authorization": f"Api-Key {key}"} if key else {}
    return (client or Client()).post(
        f"/v1/admin/models/{model}:purge",
        data=raw if raw is not None else orjson.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def error_code(response) -> str:
    return response.json()["error"]["code"]


def test_an_admin_key_purges_the_whole_model(api, backend, http_model, admin_key):
    api.predict("echo", {"instances": [[1], [2]]})

    response = purge("echo", {}, key=admin_key)

    assert response.status_code == 200, response.content
    record = PurgeRecord.objects.get()
    assert response.json() == {
        "model": "echo",
        "scope": "model",
        "version": None,
        "instances": 0,
        "entries_removed": None,
        "purge_id": record.pk,
    }
    assert (record.scope, record.requested_by) == (PurgeScope.MODEL, "api:ops")
    assert api.predict("echo", {"instances": [[1], [2]]})["X-Cache"] == "MISS"


def test_an_admin_key_purges_a_version(api, backend, http_model, admin_key):
    backend.control(modelVersionId="1", deployedModelId="dm-a")
    api.predict("echo", {"instances": [[1]]})

    response = purge("echo", {"version": "dm-a"}, key=admin_key)

    assert response.status_code == 200, response.content
    assert (response.json()["scope"], response.json()["version"]) == ("version", "dm-a")
    assert PurgeRecord.objects.get().version == "dm-a"
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"


def test_a_version_nothing_serves_is_a_409_and_purges_nothing(api, backend, http_model, admin_key):
    backend.control(modelVersionId="1", deployedModelId="dm-a")
    api.predict("echo", {"instances": [[1]]})
    backend.control(modelVersionId="2", deployedModelId="dm-b")
    api.predict("echo", {"instances": [[2]]})

    for version in ("dm-z", "dm-a"):  # never seen; retired
        response = purge("echo", {"version": version}, key=admin_key)
        assert response.status_code == 409
        assert error_code(response) == "version_not_served"
    assert api.predict("echo", {"instances": [[2]]})["X-Cache"] == "HIT"
    assert not PurgeRecord.objects.exists()


def test_an_admin_key_purges_instances(api, backend, http_model, admin_key):
    api.predict("echo", {"instances": [[1], [2]], "parameters": {"k": 1}})
    api.predict("echo", {"instances": [[1]]})

    response = purge("echo", {"instances": [[1], [3]], "parameters": {"k": 1}}, key=admin_key)

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["scope"], body["instances"], body["entries_removed"]) == ("instances", 2, 1)
    assert api.predict("echo", {"instances": [[1]], "parameters": {"k": 1}})["X-Cache"] == "MISS"
    assert api.predict("echo", {"instances": [[2]], "parameters": {"k": 1}})["X-Cache"] == "HIT"
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"


def test_a_key_that_may_only_predict_gets_403(api, api_key, backend, http_model):
    api.predict("echo", {"instances": [[1]]})

    response = purge("echo", {}, key=api_key)

    assert response.status_code == 403
    assert error_code(response) == "permission_denied"
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"
    assert not PurgeRecord.objects.exists()


def test_no_key_is_401_and_a_wrong_key_is_refused(http_model):
    response = purge("echo", {})
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"
    assert error_code(response) == "not_authenticated"

    assert purge("echo", {}, key="admin:wrong.key").status_code == 401
    assert not PurgeRecord.objects.exists()


def test_a_staff_session_may_purge_and_other_users_may_not(admin_client, admin_user, http_model):
    response = purge("echo", {}, client=admin_client)
    assert response.status_code == 200, response.content
    assert PurgeRecord.objects.get().requested_by == admin_user.username

    User.objects.create_user("someone", password="pw-123456789")
    client = Client()
    client.login(username="someone", password="pw-123456789")
    assert purge("echo", {}, client=client).status_code == 403


def test_a_staff_session_needs_the_csrf_token(admin_user, http_model):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = purge("echo", {}, client=client)
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]


@pytest.mark.parametrize("model", ["missing", "bad name", "x" * 200, "..%2f"])
def test_unknown_model_is_404(admin_key, model):
    response = purge(model, {}, key=admin_key)
    assert response.status_code == 404
    assert error_code(response) in ("model_not_found", "not_found")  # "/" in a name: no such route


def _nested(depth: int):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "body",
    [
        [],
        "model",
        {"everything": True},
        {"version": 1},
        {"version": None},
        {"version": "v" * 301},
        {"version": "1", "instances": [[1]]},
        {"parameters": {}},
        {"instances": []},
        {"instances": "[1]"},
        {"instances": [[1]], "parameters": [1]},
        {"instances": [[1]], "parameters": {"x": _nested(40)}},
    ],
)
def test_bad_bodies_are_400(http_model, admin_key, body):
    response = purge("echo", body, key=admin_key)
    assert response.status_code == 400, response.content
    assert error_code(response) in ("invalid_request", "invalid_json")
    assert not PurgeRecord.objects.exists()


@pytest.mark.parametrize("raw", [b"{", b"{}{}", b'{"instances": [NaN]}', b'{"instances": [1e999]}'])
def test_invalid_json_is_400(http_model, admin_key, raw):
    response = purge("echo", None, key=admin_key, raw=raw)
    assert response.status_code == 400
    assert error_code(response) == "invalid_json"


def test_too_many_instances_is_413(http_model, admin_key, settings):
    settings.PREDCACHE_MAX_INSTANCES = 2
    response = purge("echo", {"instances": [[1], [2], [3]]}, key=admin_key)
    assert response.status_code == 413


@pytest.mark.parametrize("body", [{}, {"instances": [[1]]}])
def test_redis_unavailable_is_503(http_model, admin_key, settings, body):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = purge("echo", body, key=admin_key)
    assert response.status_code == 503
    assert error_code(response) == "cache_unavailable"
    assert not PurgeRecord.objects.exists()


def test_only_post_is_allowed(http_model, admin_key):
    response = Client().get("/v1/admin/models/echo:purge", headers={"Authorization": f"Api-Key {admin_key}"})
    assert response.status_code == 405


def test_openapi_schema_describes_the_purge_route(client):
    schema = client.get("/v1/schema", headers={"Accept": "application/vnd.oai.openapi+json"}).json()
    operation = schema["paths"]["/v1/admin/models/{model}:purge"]["post"]
    assert operation["operationId"] == "admin_purge"
    assert {"200", "400", "401", "403", "404", "409", "503"} <= set(operation["responses"])
    response = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    fields = schema["components"]["schemas"][response.rsplit("/", 1)[1]]["properties"]
    assert set(fields) == {"model", "scope", "version", "instances", "entries_removed", "purge_id"}
    assert {next(iter(item)) for item in operation["security"]} >= {"ApiKey", "cookieAuth"}


def _entry_count(model) -> int:
    runtime = get_runtime()
    pattern = runtime.keyspace.entry(runtime.keyspace.namespace(model.pk), "*")
    return sum(1 for _ in runtime.client.scan_iter(match=pattern))


def _background_done() -> None:
    assert get_runtime().background.wait_idle(timeout=30)


@pytest.mark.django_db(transaction=True)
def test_a_purge_frees_the_memory_of_its_entries_in_the_background(api, backend, http_model, admin_key):
    api.predict("echo", {"instances": [[1], [2], [3]]})
    assert _entry_count(http_model) == 3

    assert purge("echo", {}, key=admin_key).status_code == 200

    _background_done()
    record = PurgeRecord.objects.get()
    assert (record.entries_reclaimed, record.reclaimed_at is not None) == (3, True)
    assert _entry_count(http_model) == 0


@pytest.mark.django_db(transaction=True)
def test_background_reclaim_can_be_switched_off(api, backend, http_model, admin_key, settings):
    settings.PREDCACHE_RECLAIM_AFTER_PURGE = False
    api.predict("echo", {"instances": [[1]]})

    assert purge("echo", {}, key=admin_key).status_code == 200

    _background_done()
    assert _entry_count(http_model) == 1
    assert PurgeRecord.objects.get().reclaimed_at is None


@pytest.mark.django_db(transaction=True)
def test_a_failing_background_reclaim_is_logged_not_raised(http_model, settings, caplog):
    from caching.services.purges import _reclaim_in_background

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"

    _reclaim_in_background(http_model.pk)
    _background_done()

    assert f"reclaiming purged entries of model {http_model.pk} failed" in caplog.text


def test_the_management_grant_is_the_keys_not_its_name(http_model, capsys):
    from django.core.management import call_command

    from caching.models import ApiKeyGrant

    impostor = api_key_create(label="admin:not-really")
    assert purge("echo", {}, key=impostor).status_code == 403

    call_command("predcache", "keys", "create", "deploy-bot", "--admin")
    granted = capsys.readouterr().out.strip().splitlines()[-1]
    assert purge("echo", {}, key=granted).status_code == 200

    ApiKeyGrant.objects.update(may_administer=False)  # revoked in the admin: effective at once
    assert purge("echo", {}, key=granted).status_code == 403
