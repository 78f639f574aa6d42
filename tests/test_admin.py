"""The Django admin: models with their policy, and the purge action."""

from __future__ import annotations

import pytest

from caching.models import CachePolicy, ModelEndpoint

pytestmark = pytest.mark.django_db

# What the admin's policy form posts when left at its defaults.
POLICY_DEFAULTS = {
    "policy-0-mode": "cache",
    "policy-0-ttl_seconds": "3600",
    "policy-0-ttl_jitter": "0",
    "policy-0-stale_while_revalidate_seconds": "0",
    "policy-0-stale_if_error_seconds": "0",
    "policy-0-ignore_fields": "[]",
    "policy-0-admit_after": "1",
    "policy-0-compress_over_bytes": "4096",
    "policy-0-compression": "zlib",
}


def test_changelist_shows_models(admin_client, http_model):
    response = admin_client.get("/admin/caching/modelendpoint/")
    assert response.status_code == 200
    assert b"echo" in response.content


def test_add_model_with_its_policy(admin_client, backend):
    response = admin_client.post(
        "/admin/caching/modelendpoint/add/",
        {
            "name": "from-admin",
            "backend": "http",
            "target": backend.predict_url,
            "api_endpoint": "",
            "timeout_seconds": "5",
            "model_version": "",
            "options": "{}",
            "policy-TOTAL_FORMS": "1",
            "policy-INITIAL_FORMS": "0",
            "policy-MIN_NUM_FORMS": "1",
            "policy-MAX_NUM_FORMS": "1",
            **POLICY_DEFAULTS,
            "policy-0-ttl_seconds": "45",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    assert CachePolicy.objects.get(model__name="from-admin").ttl_seconds == 45


def test_admin_refuses_a_model_path_outside_the_model_directory(admin_client):
    response = admin_client.post(
        "/admin/caching/modelendpoint/add/",
        {
            "name": "escape",
            "backend": "local",
            "target": "../../etc/passwd",
            "timeout_seconds": "5",
            "options": "{}",
            "policy-TOTAL_FORMS": "1",
            "policy-INITIAL_FORMS": "0",
            "policy-MIN_NUM_FORMS": "1",
            "policy-MAX_NUM_FORMS": "1",
            "policy-0-ttl_seconds": "45",
        },
    )
    assert response.status_code == 200
    assert b"outside the model directory" in response.content
    assert not ModelEndpoint.objects.filter(name="escape").exists()


def test_purge_action(admin_client, api, backend, http_model):
    api.predict("echo", {"instances": [[1]]})
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"

    response = admin_client.post(
        "/admin/caching/modelendpoint/",
        {"action": "purge_cache", "_selected_action": [http_model.pk]},
        follow=True,
    )
    assert b"Purged: echo" in response.content
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"


def test_the_model_page_shows_the_versions_the_cache_followed(admin_client, api, backend, http_model):
    backend.control(modelVersionId="1", deployedModelId="dm-a")
    api.predict("echo", {"instances": [[1]]})
    backend.control(modelVersionId="2", deployedModelId="dm-b")
    api.predict("echo", {"instances": [[2]]})

    page = admin_client.get(f"/admin/caching/modelendpoint/{http_model.pk}/change/")
    assert page.status_code == 200
    assert b"version changes seen by the cache" in page.content.lower()
    assert b"dm-a/1" in page.content and b"dm-b/2" in page.content

    listing = admin_client.get("/admin/caching/modelendpoint/")
    assert b"dm-b/2" in listing.content
    assert admin_client.get("/admin/caching/modelversionchange/").status_code == 200


def test_the_api_key_page_offers_the_management_grant(admin_client):
    from rest_framework_api_key.models import APIKey

    from caching.services import api_key_create

    api_key_create(label="bot", may_administer=True)
    key = APIKey.objects.get(name="bot")
    page = admin_client.get(f"/admin/rest_framework_api_key/apikey/{key.pk}/change/")
    assert page.status_code == 200
    assert b"may_administer" in page.content
