"""API keys a platform team can hand out: model scopes, rate limits, expiry, and their last use.

In process, on the test session's Redis; across processes (a gunicorn's workers and this one):
tests/test_api_keys_e2e.py.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework_api_key.models import APIKey

from caching.core.memo import OncePer
from caching.core.ratelimit import Rate
from caching.models import ApiKeyGrant
from caching.runtime import get_runtime
from caching.services import api_key_create, model_upsert
from tests.conftest import ApiClient
from tests.support.processes import fake_vertex_server, free_port

pytestmark = pytest.mark.django_db

ENDPOINT = "projects/demo/locations/us-central1/endpoints/123"
ONE_INSTANCE = {"instances": [[1]]}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def fake_vertex_url():
    with fake_vertex_server() as url:
        yield url


@pytest.fixture
def vertex_model(db, fake_vertex_url):
    import urllib3

    urllib3.PoolManager().request("POST", f"{fake_vertex_url}/reset", json={})
    model, _ = model_upsert(
        name="vx",
        backend="vertex",
        target=ENDPOINT,
        api_endpoint=fake_vertex_url,
        timeout_seconds=5,
        options={"transport": "rest"},
    )
    return model


@pytest.fixture
def other_model(db, backend):
    model, _ = model_upsert(name="other", backend="http", target=backend.predict_url)
    return model


def key_client(**limits: Any) -> ApiClient:
    return ApiClient(api_key_create(label="team", **limits))


def vertex_post(api: ApiClient, endpoint: str = ENDPOINT, body: bytes = b'{"instances": [[1, 2]]}') -> Any:
    return api.client.post(
        f"/v1/{endpoint}:predict", data=body, content_type="application/json", headers={"X-Api-Key": api.key}
    )


def error(response: Any) -> dict[str, str]:
    return response.json()["error"]


# --- scopes ---------------------------------------------------------------------------------


def test_a_scoped_key_predicts_on_its_models_and_gets_403_for_any_other_registered_or_not(
    backend, http_model, other_model
):
    api = key_client(model_names=["echo"])
    assert api.predict("echo", ONE_INSTANCE).status_code == 200
    backend.reset_calls()

    registered, unregistered = api.predict("other", ONE_INSTANCE), api.predict("ghost", ONE_INSTANCE)
    assert (registered.status_code, unregistered.status_code) == (403, 403)
    assert error(registered) == {
        "code": "model_not_in_scope",
        "message": "this API key may not use 'other': it may use 'echo' only",
    }
    # Nothing tells the two apart but the name asked for.
    assert error(unregistered)["message"] == "this API key may not use 'ghost': it may use 'echo' only"
    assert backend.calls() == []


def test_the_scope_is_checked_before_the_body_is_read(http_model, other_model):
    api = key_client(model_names=["echo"])
    response = api.client.post(
        "/v1/models/other:predict",
        data=b"not json",
        content_type="application/json",
        headers={"X-Api-Key": api.key},
    )
    assert response.status_code == 403


def test_a_key_of_every_model_still_learns_that_a_model_is_unknown(http_model):
    api = key_client()
    response = api.predict("ghost", ONE_INSTANCE)
    assert (response.status_code, error(response)["code"]) == (404, "model_not_found")


def test_the_vertex_routes_keep_the_scope_too(http_model, vertex_model):
    scoped_elsewhere = key_client(model_names=["echo"])
    for endpoint in (ENDPOINT, "projects/demo/locations/us-central1/endpoints/999"):  # registered or not
        response = vertex_post(scoped_elsewhere, endpoint)
        assert response.status_code == 403
        assert error(response) == {
            "code": "model_not_in_scope",
            "message": f"this API key may not use {endpoint!r}: it may use 'echo' only",
        }
        described = scoped_elsewhere.client.get(
            f"/v1/{endpoint}", headers={"X-Api-Key": scoped_elsewhere.key}
        )
        assert described.status_code == 403

    scoped_here = key_client(model_names=["vx"])
    assert vertex_post(scoped_here).status_code == 200
    assert (
        scoped_here.client.get(f"/v1/{ENDPOINT}", headers={"X-Api-Key": scoped_here.key}).status_code == 200
    )
    assert scoped_here.predict("echo", ONE_INSTANCE).status_code == 403


def test_a_scoped_admin_key_purges_its_own_models_only(http_model, other_model):
    key = api_key_create(label="team-bot", may_administer=True, model_names=["echo"])

    def purge(model: str) -> Any:
        return Client().post(
            f"/v1/admin/models/{model}:purge",
            data=b"{}",
            content_type="application/json",
            headers={"X-Api-Key": key},
        )

    assert purge("echo").status_code == 200
    refused = purge("other")
    assert (refused.status_code, error(refused)["code"]) == (403, "model_not_in_scope")


# --- rate limits ------------------------------------------------------------------------------


def test_past_its_rate_a_key_gets_429_with_retry_after_and_the_model_is_not_called(backend, http_model):
    api = key_client(rate=Rate(2, 60))
    assert [api.predict("echo", ONE_INSTANCE).status_code for _ in range(2)] == [200, 200]
    backend.reset_calls()

    refused = api.predict("echo", {"instances": [["new"]]})
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 30  # a token back every 30 s
    assert error(refused) == {
        "code": "rate_limited",
        "message": f"rate limit of this API key exceeded (2/m): retry after {refused['Retry-After']} s",
    }
    assert backend.calls() == []
    assert key_client().predict("echo", ONE_INSTANCE).status_code == 200  # other keys are not limited


def test_both_predict_routes_spend_one_limit(http_model, vertex_model):
    api = key_client(rate=Rate(2, 60))
    assert api.predict("echo", ONE_INSTANCE).status_code == 200
    assert vertex_post(api).status_code == 200
    assert vertex_post(api).status_code == 429
    assert api.predict("echo", ONE_INSTANCE).status_code == 429


def test_with_redis_down_rate_limited_keys_are_served(settings, http_model):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.PREDCACHE_REDIS_SOCKET_TIMEOUT = settings.PREDCACHE_REDIS_CONNECT_TIMEOUT = 0.2
    # Every request tries Redis (the breaker stays closed: an open one would stay in this
    # process's metrics for the tests after this one); tests/core/test_ratelimit.py opens it.
    settings.PREDCACHE_REDIS_BREAKER_FAILURES = 100
    api = key_client(rate=Rate(1, 60))
    responses = [api.predict("echo", ONE_INSTANCE) for _ in range(3)]
    assert [(response.status_code, response["X-Cache"]) for response in responses] == [(200, "BYPASS")] * 3


def test_a_remembered_key_costs_a_hit_no_database_query(django_assert_num_queries, http_model):
    api = key_client(model_names=["echo"], rate=Rate(1000, 60))
    assert api.predict("echo", ONE_INSTANCE).status_code == 200
    with django_assert_num_queries(0):
        assert api.predict("echo", ONE_INSTANCE)["X-Cache"] == "HIT"


# --- expiry ---------------------------------------------------------------------------------


def test_an_expired_key_is_refused_saying_so(http_model):
    api = key_client(expires_days=1)
    assert api.predict("echo", ONE_INSTANCE).status_code == 200
    api_key = APIKey.objects.get(name="team")
    api_key.expiry_date = timezone.now() - timedelta(seconds=1)
    api_key.save()  # the admin saves the row; the signal drops this process's remembered keys

    refused = api.predict("echo", ONE_INSTANCE)
    assert refused.status_code == 401
    assert error(refused) == {"code": "authentication_failed", "message": "the API key has expired"}


def test_a_key_stops_at_its_expiry_even_while_its_verification_is_remembered(settings, http_model):
    settings.PREDCACHE_API_KEY_CACHE_SECONDS = 3600
    api = key_client()
    expiry = timezone.now() + timedelta(seconds=3)
    APIKey.objects.filter(name="team").update(expiry_date=expiry)  # before its first use: remembered so
    assert api.predict("echo", ONE_INSTANCE).status_code == 200

    deadline = time.monotonic() + 30
    while api.predict("echo", ONE_INSTANCE).status_code == 200:
        assert time.monotonic() < deadline, "the key outlived its expiry"
    assert timezone.now() >= expiry


# --- last use ---------------------------------------------------------------------------------


@pytest.fixture
def last_uses_written(settings: Any) -> None:
    """As in production (the tests' default is off: tests/env.py)."""
    settings.PREDCACHE_API_KEY_LAST_USED_SECONDS = 60


@pytest.mark.django_db(transaction=True)
def test_the_last_use_is_written_in_the_background_at_most_once_a_minute_per_process(
    last_uses_written, http_model
):
    api = key_client()
    runtime = get_runtime()
    assert runtime.api_key_uses is not None and runtime.api_key_uses.seconds == 60
    clock = FakeClock()
    runtime.api_key_uses = OncePer(60, clock=clock)
    grant = ApiKeyGrant.objects.get(api_key__name="team")
    assert grant.last_used_at is None

    def last_used_after_a_request() -> Any:
        before = timezone.now()
        assert api.predict("echo", ONE_INSTANCE).status_code == 200
        assert runtime.background.wait_idle(10)
        grant.refresh_from_db()
        assert grant.last_used_at is None or grant.last_used_at >= before
        return grant.last_used_at

    assert last_used_after_a_request() is not None
    ApiKeyGrant.objects.update(last_used_at=None)
    clock.advance(59)
    assert last_used_after_a_request() is None  # used within the minute: not written again
    clock.advance(1)
    assert last_used_after_a_request() is not None


@pytest.mark.django_db(transaction=True)
def test_a_key_made_without_a_grant_gets_one_with_its_last_use(last_uses_written, http_model):
    _, key = APIKey.objects.create_key(name="from-the-admin")
    assert ApiClient(key).predict("echo", ONE_INSTANCE).status_code == 200
    assert get_runtime().background.wait_idle(10)
    assert ApiKeyGrant.objects.get(api_key__name="from-the-admin").last_used_at is not None


@pytest.mark.django_db(transaction=True)
def test_no_last_use_is_written_when_it_is_off(settings, http_model):
    settings.PREDCACHE_API_KEY_LAST_USED_SECONDS = 0
    api = key_client()
    assert api.predict("echo", ONE_INSTANCE).status_code == 200
    assert get_runtime().background.wait_idle(10)
    assert ApiKeyGrant.objects.get(api_key__name="team").last_used_at is None


def test_a_scope_or_rate_edited_here_applies_at_once(http_model, other_model):
    api = key_client(model_names=["echo"])
    assert api.predict("other", ONE_INSTANCE).status_code == 403
    grant = ApiKeyGrant.objects.get(api_key__name="team")
    grant.model_names = ["echo", "other"]
    grant.rate_limit, grant.rate_period_seconds = 1, 60
    grant.save()  # as the admin does; other processes follow within PREDCACHE_API_KEY_CACHE_SECONDS

    assert api.predict("other", ONE_INSTANCE).status_code == 200
    assert api.predict("other", ONE_INSTANCE).status_code == 429
