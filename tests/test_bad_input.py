"""Every malformed request gets a JSON 4xx, never reaches the backend, and never a 500."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

MALFORMED = {
    "not-json": (b"{instances: [1]}", 400),
    "truncated": (b'{"instances": [1', 400),
    "top-level-list": (b"[1, 2]", 400),
    "top-level-string": (b'"instances"', 400),
    "missing-instances": (b'{"parameters": {}}', 400),
    "instances-not-list": (b'{"instances": {"a": 1}}', 400),
    "instances-string": (b'{"instances": "abc"}', 400),
    "instances-null": (b'{"instances": null}', 400),
    "empty-instances": (b'{"instances": []}', 400),
    "parameters-list": (b'{"instances": [1], "parameters": [1]}', 400),
    "parameters-string": (b'{"instances": [1], "parameters": "p"}', 400),
    "unknown-field": (b'{"instances": [1], "signature_name": "x"}', 400),
    "nan": (b'{"instances": [NaN]}', 400),
    "infinity": (b'{"instances": [Infinity]}', 400),
    "minus-infinity": (b'{"instances": [-Infinity]}', 400),
    "overflowing-float": (b'{"instances": [1e400]}', 400),
    "huge-integer": (b'{"instances": [1' + b"0" * 5000 + b"]}", 400),
    # orjson would round these to doubles; two different integers must never share a key
    "integer-past-2**64": (b'{"instances": [18446744073709551616]}', 400),
    "integer-below-minus-2**63": (b'{"instances": [{"id": -9223372036854775809}]}', 400),
    "30-digit-integer-in-parameters": (
        b'{"instances": [1], "parameters": {"seed": ' + b"9" * 30 + b"}}",
        400,
    ),
    "deep-nesting": (b'{"instances": [' + b"[" * 40 + b"]" * 40 + b"]}", 400),
    "very-deep-nesting": (b'{"instances": [' + b"[" * 5000 + b"]" * 5000 + b"]}", 400),
    "deep-parameters": (b'{"instances": [1], "parameters": {"a":' + b"[" * 40 + b"]" * 40 + b"}}", 400),
    "invalid-utf8": (b'{"instances": ["\xff\xfe"]}', 400),
    "lone-surrogate": (b'{"instances": ["\\ud800"]}', 400),
    "empty-body": (b"", 400),  # Django's test client drops the content type of an empty body
    "trailing-garbage": (b'{"instances": [1]} x', 400),
}


@pytest.mark.parametrize("body,status", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_body_is_a_json_4xx_and_never_reaches_the_backend(api, backend, http_model, body, status):
    response = api.client.post(
        "/v1/models/echo:predict",
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Api-Key {api.key}"},
    )
    assert response.status_code == (415 if body == b"" else status)
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] and error["message"]
    assert backend.calls() == []


def test_too_many_instances_is_413(api, backend, http_model, settings):
    settings.PREDCACHE_MAX_INSTANCES = 5
    response = api.predict("echo", {"instances": [[i] for i in range(6)]})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert backend.calls() == []


def test_oversized_body_is_413(api, backend, http_model, settings):
    settings.PREDCACHE_MAX_BODY_BYTES = 1000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.predict("echo", {"instances": ["x" * 2000]})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert backend.calls() == []


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1", ""],
)
def test_wrong_content_type_is_415(api, backend, http_model, content_type):
    response = api.client.post(
        "/v1/models/echo:predict",
        data=b'{"instances": [1]}',
        content_type=content_type,
        headers={"Authorization": f"Api-Key {api.key}"},
    )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert backend.calls() == []


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", 'Application/JSON; Charset="UTF-8"', "application/json"],
)
def test_json_with_utf8_charset_is_accepted(api, backend, http_model, content_type):
    response = api.client.post(
        "/v1/models/echo:predict",
        data=b'{"instances": [1]}',
        content_type=content_type,
        headers={"Authorization": f"Api-Key {api.key}"},
    )
    assert response.status_code == 200


def test_64_bit_integers_are_exact_and_distinct(api, backend, http_model):
    """Integers at the edge of 64 bits keep every digit, and neighbours do not share an entry."""
    big = 2**64 - 1
    first = api.client.post(
        "/v1/models/echo:predict",
        data=f'{{"instances": [{big}]}}'.encode(),
        content_type="application/json",
        headers={"Authorization": f"Api-Key {api.key}"},
    )
    second = api.client.post(
        "/v1/models/echo:predict",
        data=f'{{"instances": [{big - 1}]}}'.encode(),
        content_type="application/json",
        headers={"Authorization": f"Api-Key {api.key}"},
    )
    assert first.json()["predictions"][0]["echo"] == big
    assert second["X-Cache"] == "MISS"
    assert second.json()["predictions"][0]["echo"] == big - 1


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_other_methods_on_the_predict_url_are_405(api, backend, http_model, method):
    response = getattr(api.client, method)(
        "/v1/models/echo:predict", headers={"Authorization": f"Api-Key {api.key}"}
    )
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert backend.calls() == []


HOSTILE_NAMES = [
    "nope",
    "..",
    "%2e%2e",
    "echo%00",
    "a" * 300,
    "echo:predict",
    "ech%C3%B6",
    "%ff%fe",
    "echo%20",
    "-leading-dash",
    "'; DROP TABLE caching_modelendpoint; --",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_unknown_or_hostile_model_name_is_a_json_404(api, backend, http_model, name):
    response = api.client.post(
        f"/v1/models/{name}:predict",
        data=b'{"instances": [1]}',
        content_type="application/json",
        headers={"Authorization": f"Api-Key {api.key}"},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] in ("model_not_found", "not_found")
    assert backend.calls() == []


def test_paths_outside_the_api_are_json_404(db):
    response = Client().get("/v1/models/a/b:predict")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_bad_instance_for_a_local_model_is_a_400(api, local_model):
    response = api.predict(local_model.name, {"instances": [[1.0, 2.0]]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_instances"
    assert "expects 4" in response.json()["error"]["message"]
