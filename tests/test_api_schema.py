"""The published OpenAPI schema is the truth: what it admits the server accepts, and the reverse.

In process: request bodies are required and closed, every body in a table is refused exactly
when the schema forbids it, path parameters have patterns, other methods are a JSON 405. Live:
schemathesis reads ``/v1/schema`` from a real gunicorn (the test database, an ``http`` model
on the model server process, a ``vertex`` model on the fake Vertex AI server, an admin key)
and sends what the schema allows and what it forbids, with every check on.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from django.core.management import call_command
from django.test import Client

from caching.core.canonical import INTEGER_MAX, INTEGER_MIN
from tests.support.gunicorn_server import (
    GunicornServer,
    environment_serving_the_test_database,
    gunicorn_server,
)
from tests.support.processes import fake_vertex_server

# The models the schema's examples name, so the examples and what is built from them reach a
# real model: a path parameter drawn at random names no model and is a 404.
MODEL = "iris"
VERTEX_ENDPOINT = "projects/my-project/locations/us-central1/endpoints/1234567890"
SEED = 20260
MAX_EXAMPLES = 100

pytestmark = pytest.mark.django_db

PREDICT = "/v1/models/{model}:predict"
VERTEX_ENDPOINT_PATH = "/v1/projects/{project}/locations/{location}/endpoints/{endpoint}"
VERTEX_PREDICT = f"{VERTEX_ENDPOINT_PATH}:predict"
PURGE = "/v1/admin/models/{model}:purge"
# A vertex model's endpoint in the in-process tests (no Vertex server is called: nothing gets there).
ENDPOINT = "projects/demo/locations/us-central1/endpoints/123"


def served_schema(client: Client) -> dict[str, Any]:
    response = client.get("/v1/schema", headers={"Accept": "application/vnd.oai.openapi+json"})
    assert response.status_code == 200
    return response.json()


def component(document: dict[str, Any], reference: dict[str, str]) -> dict[str, Any]:
    return document["components"]["schemas"][reference["$ref"].rsplit("/", 1)[1]]


def request_body(document: dict[str, Any], path: str) -> dict[str, Any]:
    return document["paths"][path]["post"]["requestBody"]


def json_schema(node: Any) -> Any:
    """OpenAPI 3.0's schema dialect as plain JSON Schema: ``nullable`` becomes a null branch."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: json_schema(value) for key, value in node.items() if key != "nullable"}
    return {"anyOf": [converted, {"type": "null"}]} if node.get("nullable") else converted


def schema_admits(document: dict[str, Any], path: str, body: Any) -> bool:
    """Whether the served schema's request body for ``path`` admits ``body``."""
    reference = request_body(document, path)["content"]["application/json"]["schema"]
    return jsonschema.Draft202012Validator({**json_schema(document), **reference}).is_valid(body)


def post_json(client: Client, path: str, body: Any, key: str) -> Any:
    # json, not orjson: these bodies hold integers orjson refuses to write.
    return client.post(
        path, data=json.dumps(body), content_type="application/json", headers={"X-Api-Key": key}
    )


@pytest.fixture
def admin_key(db: None) -> str:
    from caching.services import api_key_create

    return api_key_create(label="schema-admin", may_administer=True)


# --- what the schema says ---------------------------------------------------------------------


def test_the_schema_generates_without_warnings_and_validates(tmp_path: Path) -> None:
    """drf-spectacular warns where it guessed (a view it could not describe): nothing is guessed."""
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))


@pytest.mark.parametrize("path", [PREDICT, VERTEX_PREDICT])
def test_the_predict_body_is_required_and_requires_instances(client: Client, path: str) -> None:
    document = served_schema(client)
    body = request_body(document, path)
    assert body["required"] is True
    assert list(body["content"]) == ["application/json"]
    request = component(document, body["content"]["application/json"]["schema"])
    assert request["required"] == ["instances"]
    assert request["properties"]["instances"]["minItems"] == 1
    assert request["additionalProperties"] is False


def test_the_purge_body_is_required_and_one_of_three_shapes(client: Client) -> None:
    document = served_schema(client)
    body = request_body(document, PURGE)
    assert body["required"] is True
    shapes = component(document, body["content"]["application/json"]["schema"])["oneOf"]
    assert [shape.get("required", []) for shape in shapes] == [[], ["version"], ["instances"]]
    assert all(shape["additionalProperties"] is False for shape in shapes)


def test_every_path_parameter_has_a_pattern_and_no_template_matches_the_schema_routes(
    client: Client,
) -> None:
    document = served_schema(client)
    for template, operations in document["paths"].items():
        for operation in operations.values():
            for parameter in operation["parameters"]:
                if parameter["in"] == "path":
                    assert parameter["schema"]["pattern"].startswith("^"), (template, parameter["name"])
        parts = re.split(r"(\{[^}]+\})", template)
        regex = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
        for route in ("/v1/schema", "/v1/docs"):
            assert not re.fullmatch(regex, route), (template, route)


def test_the_key_scheme_is_what_swagger_sends_and_it_works(
    client: Client, api_key: str, backend: Any, http_model: Any
) -> None:
    scheme = served_schema(client)["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["in"]) == ("apiKey", "header")
    assert "<" not in scheme["description"]  # Swagger UI renders it as HTML
    response = client.post(
        "/v1/models/echo:predict",
        data=b'{"instances": [1]}',
        content_type="application/json",
        headers={scheme["name"]: api_key},
    )
    assert response.status_code == 200


def test_the_vertex_endpoint_resource_documents_401(client: Client, db: None) -> None:
    operation = served_schema(client)["paths"][VERTEX_ENDPOINT_PATH]["get"]
    assert {"200", "401", "404", "405"} <= set(operation["responses"])
    assert client.get(f"/v1/{ENDPOINT}").status_code == 401


@pytest.mark.parametrize("path", [PREDICT, VERTEX_PREDICT])
def test_the_predict_routes_document_the_key_limits(client: Client, path: str) -> None:
    """403: a model outside the key's scope; 429: its rate used up, with Retry-After."""
    responses = served_schema(client)["paths"][path]["post"]["responses"]
    assert {"401", "403", "429"} <= set(responses)
    assert (
        responses["403"]["content"]["application/json"]["examples"]["ModelNotInScope"]["value"]["error"][
            "code"
        ]
        == "model_not_in_scope"
    )
    assert responses["429"]["headers"]["Retry-After"]["schema"] == {"type": "integer"}
    assert "Retry-After" not in responses["200"]["headers"]


# --- the schema and the server agree ------------------------------------------------------------

PREDICT_BODIES = {
    "instances": {"instances": [1, "a", None, [True], {"k": 1.5}]},
    "parameters": {"instances": [1], "parameters": {"k": [1, None]}},
    "null-parameters": {"instances": [1], "parameters": None},
    "64-bit-integers": {"instances": [INTEGER_MAX, INTEGER_MIN]},
    "integer-past-2**64": {"instances": [INTEGER_MAX + 1]},
    "integer-below-minus-2**63": {"instances": [{"id": INTEGER_MIN - 1}]},
    "empty-instances": {"instances": []},
    "too-many-instances": {"instances": [1, 2, 3]},
    "no-instances": {"parameters": {}},
    "unknown-field": {"instances": [1], "signature_name": "x"},
    "instances-object": {"instances": {"a": 1}},
    "parameters-list": {"instances": [1], "parameters": [1]},
    "parameters-string": {"instances": [1], "parameters": "p"},
    "top-level-list": [1],
}


@pytest.mark.parametrize("body", PREDICT_BODIES.values(), ids=PREDICT_BODIES.keys())
def test_a_predict_body_is_refused_exactly_when_the_schema_forbids_it(
    client: Client, api_key: str, backend: Any, http_model: Any, settings: Any, body: Any
) -> None:
    settings.PREDCACHE_MAX_INSTANCES = 2
    admitted = schema_admits(served_schema(client), PREDICT, body)
    response = post_json(client, "/v1/models/echo:predict", body, api_key)
    assert (response.status_code not in (400, 413)) == admitted, response.content
    assert response.status_code in ((200,) if admitted else (400, 413))


PURGE_BODIES = {
    "whole-model": {},
    "version": {"version": "v1"},
    "instances": {"instances": [[1]]},
    "instances-with-parameters": {"instances": [[1]], "parameters": {"k": 1}},
    "instances-with-null-parameters": {"instances": [[1]], "parameters": None},
    "version-and-instances": {"version": "v1", "instances": [[1]]},
    "version-and-parameters": {"version": "v1", "parameters": {}},
    "parameters-alone": {"parameters": {}},
    "null-parameters-alone": {"parameters": None},
    "version-number": {"version": 1},
    "version-null": {"version": None},
    "version-too-long": {"version": "v" * 301},
    "empty-instances": {"instances": []},
    "too-many-instances": {"instances": [[1], [2], [3]]},
    "unknown-field": {"everything": True},
    "top-level-list": [],
}


@pytest.mark.parametrize("body", PURGE_BODIES.values(), ids=PURGE_BODIES.keys())
def test_a_purge_body_is_refused_exactly_when_the_schema_forbids_it(
    client: Client, admin_key: str, http_model: Any, settings: Any, body: Any
) -> None:
    settings.PREDCACHE_MAX_INSTANCES = 2
    admitted = schema_admits(served_schema(client), PURGE, body)
    response = post_json(client, "/v1/admin/models/echo:purge", body, admin_key)
    assert (response.status_code not in (400, 413)) == admitted, response.content
    # An admitted version nothing serves is a 409: the body was fine, the version is not served.
    assert response.status_code in ((200, 409) if admitted else (400, 413))


def test_null_parameters_are_the_same_as_none(
    client: Client, api_key: str, backend: Any, http_model: Any
) -> None:
    first = post_json(client, "/v1/models/echo:predict", {"instances": [7], "parameters": None}, api_key)
    second = post_json(client, "/v1/models/echo:predict", {"instances": [7]}, api_key)
    assert (first.status_code, first["X-Cache"]) == (200, "MISS")
    assert (second.status_code, second["X-Cache"]) == (200, "HIT")


# --- methods ----------------------------------------------------------------------------------

ROUTES = {
    "predict": ("/v1/models/echo:predict", "POST"),
    "vertex-predict": (f"/v1/{ENDPOINT}:predict", "POST"),
    "purge": ("/v1/admin/models/echo:purge", "POST"),
    "vertex-endpoint": (f"/v1/{ENDPOINT}", "GET, HEAD"),
}


@pytest.mark.parametrize("method", ["OPTIONS", "PUT", "PATCH", "DELETE", "TRACE"])
@pytest.mark.parametrize("route", ROUTES.values(), ids=ROUTES.keys())
def test_undocumented_methods_are_a_json_405_naming_the_allowed_ones(
    client: Client, admin_key: str, http_model: Any, route: tuple[str, str], method: str
) -> None:
    path, allowed = route
    response = client.generic(method, path, headers={"X-Api-Key": admin_key})
    assert response.status_code == 405
    assert response["Allow"] == allowed
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("route", [ROUTES["predict"], ROUTES["vertex-predict"], ROUTES["purge"]])
def test_head_and_get_of_a_post_route_are_405(client: Client, admin_key: str, route: tuple[str, str]) -> None:
    for method in ("HEAD", "GET"):
        response = client.generic(method, route[0], headers={"X-Api-Key": admin_key})
        assert (response.status_code, response["Allow"]) == (405, "POST")


# --- a live server, schemathesis --------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    admin_key: str


@pytest.fixture(scope="module")
def seeded(django_db_setup: None, django_db_blocker: Any, model_server_url: str) -> Iterator[Seeded]:
    """The schema examples' models and an admin key, committed so that the server sees them."""
    from rest_framework_api_key.models import APIKey

    from caching.models import ModelEndpoint
    from caching.services import api_key_create, model_upsert

    label = f"schema-{uuid.uuid4().hex[:8]}"
    with fake_vertex_server() as vertex_url, django_db_blocker.unblock():
        model_upsert(name=MODEL, backend="http", target=f"{model_server_url}/predict")
        model_upsert(
            name="schema-vertex",
            backend="vertex",
            target=VERTEX_ENDPOINT,
            api_endpoint=vertex_url,
            timeout_seconds=5,
            options={"transport": "rest"},
        )
        try:
            yield Seeded(admin_key=api_key_create(label=label, may_administer=True))
        finally:
            ModelEndpoint.objects.filter(name__in=[MODEL, "schema-vertex"]).delete()
            APIKey.objects.filter(name=label).delete()


@pytest.fixture(scope="module")
def server(
    seeded: Seeded, redis_url: str, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornServer]:
    environment = {
        **environment_serving_the_test_database(django_db_blocker, redis_url, name="schema"),
        "WEB_CONCURRENCY": "2",
    }
    with gunicorn_server(tmp_path_factory.mktemp("schema-gunicorn"), environment=environment) as running:
        yield running


# Every check is on (--checks all); these are the settings that differ from schemathesis' defaults.
SCHEMATHESIS_CONFIG = """
[generation]
database = "none"  # no example database left behind: each run is the seed's alone

[auth.openapi.ApiKey]
api_key = "${PREDCACHE_SCHEMATHESIS_KEY}"

# The defaults, and 413: more instances than the schema's maxItems are "too large", as documented.
[checks.negative_data_rejection]
expected-statuses = [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx",
]

# A warning (say, every request for an operation was a 404) means the run tested less than it seems.
[warnings]
fail-on = true
"""


def schemathesis_command(base_url: str, config: Path) -> list[str]:
    """``schemathesis run`` over every operation with every check, bounded and seeded."""
    return [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"),
        f"{base_url}/v1/schema",
        *("--checks", "all", "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--no-color"),
    ]


def test_schemathesis_finds_nothing_against_a_live_server(
    server: GunicornServer, seeded: Seeded, tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    command = schemathesis_command(f"http://127.0.0.1:{server.port}", config)
    environment = {**os.environ, "PREDCACHE_SCHEMATHESIS_KEY": seeded.admin_key}
    result = subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)}\n{report[-20_000:]}"
    assert "No issues found" in report
