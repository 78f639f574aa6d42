"""API keys: required on predict, accepted in either header, stored hashed, revocable."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework_api_key.models import APIKey

pytestmark = pytest.mark.django_db


def _post(headers):
    return Client().post(
        "/v1/models/echo:predict",
        data=b'{"instances": [1]}',
        content_type="application/json",
        headers=headers,
    )


def test_no_key_is_401_with_the_error_shape(http_model, backend):
    response = _post({})
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"
    assert response.json()["error"] == {
        "code": "not_authenticated",
        "message": "no API key: send 'Authorization: Api-Key <key>' or an 'X-Api-Key: <key>' header",
    }
    assert backend.calls() == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Api-Key wrong.key"},
        {"Authorization": "Api-Key nodot"},
        {"X-Api-Key": "wrong.key"},
        {"Authorization": "Bearer something"},
    ],
)
def test_wrong_key_is_rejected(http_model, backend, api_key, headers):
    response = _post(headers)
    assert response.status_code in (401, 403)
    assert response.json()["error"]["code"] in ("authentication_failed", "not_authenticated")
    assert backend.calls() == []


@pytest.mark.parametrize("header", ["Authorization", "X-Api-Key"])
def test_valid_key_in_either_header(http_model, backend, api_key, header):
    value = f"Api-Key {api_key}" if header == "Authorization" else api_key
    assert _post({header: value}).status_code == 200


def test_keys_are_stored_hashed(api_key):
    stored = APIKey.objects.get()
    assert api_key not in stored.hashed_key
    assert stored.hashed_key.startswith("sha512$$")


def test_revoked_key_stops_working(http_model, backend, api_key):
    assert _post({"X-Api-Key": api_key}).status_code == 200
    APIKey.objects.update(revoked=True)
    key = APIKey.objects.get()
    key.save()  # the admin saves the row; the signal drops this process's remembered keys

    assert _post({"X-Api-Key": api_key}).status_code == 401


def test_a_bearer_token_is_told_what_predcache_expects(http_model, backend):
    response = _post({"Authorization": "Bearer ya29.a0AfB_token"})
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"
    message = response.json()["error"]["message"]
    assert message.startswith("predcache does not take Bearer tokens")
    assert "Authorization: Api-Key <key>" in message and "X-Api-Key" in message


def test_a_key_header_wins_over_a_bearer_token(http_model, backend, api_key):
    """Google's client libraries send their access token as well as x-goog-api-key."""
    assert _post({"Authorization": "Bearer ya29.token", "X-Goog-Api-Key": api_key}).status_code == 200
