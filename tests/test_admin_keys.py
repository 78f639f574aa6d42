"""The API key admin: each key's models, rate, expiry, revocation and last use, shown and edited."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.utils import formats, timezone
from rest_framework_api_key.models import APIKey

from caching.core.ratelimit import Rate
from caching.models import ApiKeyGrant
from caching.services import api_key_create, model_upsert
from tests.conftest import ApiClient

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/rest_framework_api_key/apikey/"


def change_page(api_key: APIKey) -> str:
    return f"{CHANGELIST}{api_key.pk}/change/"


def grant_form(api_key: APIKey, **fields: Any) -> dict[str, Any]:
    """What the key's change page posts: its own fields, then its one grant's."""
    grant = ApiKeyGrant.objects.get(api_key=api_key)
    return {
        "name": api_key.name,
        "expiry_date_0": "",
        "expiry_date_1": "",
        "grant-TOTAL_FORMS": "1",
        "grant-INITIAL_FORMS": "1",
        "grant-MIN_NUM_FORMS": "0",
        "grant-MAX_NUM_FORMS": "1",
        "grant-0-id": str(grant.pk),
        "grant-0-api_key": api_key.pk,
        "grant-0-rate_period_seconds": "60",
        **{f"grant-0-{name}": value for name, value in fields.items()},
    }


@pytest.fixture
def second_model(db, backend):
    model, _ = model_upsert(name="other", backend="http", target=backend.predict_url)
    return model


def test_the_list_shows_each_keys_models_rate_and_last_use(admin_client, http_model):
    api_key_create(label="team", model_names=["echo"], rate=Rate(5, 60))
    api_key_create(label="plain")
    ApiKeyGrant.objects.filter(api_key__name="team").update(last_used_at=timezone.now())

    page = admin_client.get(CHANGELIST)
    assert page.status_code == 200
    text = page.content.decode()
    assert '<td class="field-models">echo</td>' in text
    assert '<td class="field-models">all</td>' in text
    assert '<td class="field-rate">5/m</td>' in text
    assert '<td class="field-rate">-</td>' in text
    assert text.count('<td class="field-last_used"><time') == 1


def test_the_key_page_edits_its_models_and_rate_and_they_apply_at_once(
    admin_client, http_model, second_model
):
    key = api_key_create(label="team", model_names=["echo"])
    api = ApiClient(key)
    assert api.predict("other", {"instances": [1]}).status_code == 403
    api_key = APIKey.objects.get(name="team")

    page = admin_client.get(change_page(api_key))
    assert page.status_code == 200
    assert b'value="other"' in page.content  # every registered model is offered

    response = admin_client.post(
        change_page(api_key),
        grant_form(api_key, model_names=["echo", "other"], rate_limit="1"),
    )
    assert response.status_code == 302, response.content[:3000]
    grant = ApiKeyGrant.objects.get(api_key=api_key)
    assert (grant.model_names, grant.rate) == (["echo", "other"], Rate(1, 60))

    assert api.predict("other", {"instances": [1]}).status_code == 200
    assert api.predict("other", {"instances": [1]}).status_code == 429


def test_a_scope_naming_a_deleted_model_keeps_it_and_says_so(admin_client, http_model, second_model):
    api_key_create(label="team", model_names=["other"])
    second_model.delete()  # the key does not widen to every model
    api_key = APIKey.objects.get(name="team")
    assert APIKey.objects.get(name="team").grant.scope == frozenset({"other"})

    page = admin_client.get(change_page(api_key))
    assert "other (not registered)" in page.content.decode()


def test_the_key_page_sets_an_expiry_and_shows_the_last_use(admin_client, http_model):
    api_key_create(label="team")
    api_key = APIKey.objects.get(name="team")
    used = timezone.now() - timedelta(minutes=3)
    ApiKeyGrant.objects.filter(api_key=api_key).update(last_used_at=used)

    page = admin_client.get(change_page(api_key)).content.decode()
    shown = formats.localize(timezone.template_localtime(used))
    assert re.search(rf'<label>Last used:</label>\s*<div class="readonly">{re.escape(shown)}</div>', page)

    form = grant_form(api_key)
    form["expiry_date_0"], form["expiry_date_1"] = "2030-01-02", "03:04:05"
    assert admin_client.post(change_page(api_key), form).status_code == 302
    assert APIKey.objects.get(name="team").expiry_date.year == 2030


def test_the_revoke_action_stops_the_selected_keys(admin_client, http_model):
    keys = {label: api_key_create(label=label) for label in ("leaked", "kept")}
    leaked = APIKey.objects.get(name="leaked")
    assert ApiClient(keys["leaked"]).predict("echo", {"instances": [1]}).status_code == 200

    response = admin_client.post(
        CHANGELIST, {"action": "revoke_keys", "_selected_action": [leaked.pk]}, follow=True
    )
    assert "Revoked 1 API key" in response.content.decode()
    assert APIKey.objects.get(name="leaked").revoked
    assert not APIKey.objects.get(name="kept").revoked
    assert ApiClient(keys["leaked"]).predict("echo", {"instances": [1]}).status_code == 401
    assert ApiClient(keys["kept"]).predict("echo", {"instances": [1]}).status_code == 200


def test_the_management_grant_is_on_the_key_page(admin_client):
    api_key_create(label="bot", may_administer=True)
    page = admin_client.get(change_page(APIKey.objects.get(name="bot")))
    assert page.status_code == 200
    assert b"may_administer" in page.content
