"""Health probes and the OpenAPI schema."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_when_database_and_redis_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}


def test_openapi_schema_describes_the_predict_route(client):
    response = client.get("/v1/schema", headers={"Accept": "application/vnd.oai.openapi+json"})
    assert response.status_code == 200
    schema = response.json()
    operation = schema["paths"]["/v1/models/{model}:predict"]["post"]
    assert set(operation["responses"]) >= {"200", "400", "401", "404", "413", "415", "502", "503", "504"}
    error = operation["responses"]["404"]["content"]["application/json"]["schema"]
    assert error["$ref"].endswith("/Error")
    assert {"X-Cache", "X-Cache-Hits", "X-Cache-Misses"} <= set(operation["responses"]["200"]["headers"])
    assert schema["components"]["securitySchemes"]["ApiKey"]["type"] == "apiKey"


def test_docs_ui_is_served(client):
    response = client.get("/v1/docs")
    assert response.status_code == 200
    assert b"swagger-ui" in response.content


def test_openapi_schema_describes_the_vertex_routes(client):
    schema = client.get("/v1/schema", headers={"Accept": "application/vnd.oai.openapi+json"}).json()
    endpoint = "/v1/projects/{project}/locations/{location}/endpoints/{endpoint}"
    predict = schema["paths"][f"{endpoint}:predict"]["post"]
    assert predict["operationId"] == "vertex_predict"
    assert {"200", "400", "404", "502", "503", "504"} <= set(predict["responses"])
    assert schema["paths"][endpoint]["get"]["operationId"] == "vertex_endpoint"


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_whatever_the_host_header(client, db, path, settings):
    """Cloud Run and Kubernetes probe containers by IP; ALLOWED_HOSTS must not fail them."""
    settings.ALLOWED_HOSTS = ["predcache.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    response = client.get(path, headers={"Host": "169.254.8.1:8080"})
    assert response.status_code == 200
    assert client.get("/v1/schema", headers={"Host": "169.254.8.1:8080"}).status_code == 400
