"""Pulumi mocks that record every resource and answer with the outputs GCP would compute, and test helpers."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pulumi

PROJECT = "predcache-test-project"
REGION = "europe-west1"
# Values only the mocks produce: finding one in a plain env value means a secret leaked; finding the hosts
# in REDIS_URL proves it was read from the Memorystore resource's outputs.
REDIS_INSTANCE_HOST = "10.77.0.5"
REDIS_INSTANCE_PORT = 6378
REDIS_CLUSTER_HOST = "10.20.0.9"
REDIS_CLUSTER_PORT = 6379
REDIS_AUTH_STRING = "mock-auth-string-3f9c1e"
REDIS_CA_PEM = "-----BEGIN CERTIFICATE-----\nMOCKREDISCA\n-----END CERTIFICATE-----"
SQL_PRIVATE_IP = "10.77.1.3"
SERVICE_URL = "https://predcache-web-mock-ew.a.run.app"
VERTEX_ENDPOINT_ID = 4242424242
SERVICE_ACCOUNT_EMAIL = f"predcache-app@{PROJECT}.iam.gserviceaccount.com"


def random_password(name: str) -> str:
    """The mock result of the RandomPassword named `name`."""
    return f"mock-random-password-{name}"


def _computed_outputs(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The output-only properties of the resources the program reads outputs from."""
    if typ == "gcp:redis/instance:Instance":
        return {
            "host": REDIS_INSTANCE_HOST,
            "port": REDIS_INSTANCE_PORT,
            "authString": REDIS_AUTH_STRING if inputs.get("authEnabled") else "",
            "serverCaCerts": [{"cert": REDIS_CA_PEM}],
        }
    if typ == "gcp:redis/cluster:Cluster":
        return {
            "discoveryEndpoints": [{"address": REDIS_CLUSTER_HOST, "port": REDIS_CLUSTER_PORT}],
            "managedServerCas": [{"caCerts": [{"certificates": [REDIS_CA_PEM]}]}],
        }
    if typ == "gcp:sql/databaseInstance:DatabaseInstance":
        return {
            "name": f"{name}-a1b2c3",
            "privateIpAddress": SQL_PRIVATE_IP,
            "connectionName": f"{PROJECT}:{REGION}:{name}-a1b2c3",
        }
    if typ == "random:index/randomPassword:RandomPassword":
        return {"result": random_password(name)}
    if typ == "random:index/randomInteger:RandomInteger":
        return {"result": VERTEX_ENDPOINT_ID}
    if typ == "gcp:serviceaccount/account:Account":
        return {"email": SERVICE_ACCOUNT_EMAIL, "member": f"serviceAccount:{SERVICE_ACCOUNT_EMAIL}"}
    if typ == "gcp:projects/iAMCustomRole:IAMCustomRole":
        return {"name": f"projects/{PROJECT}/roles/{inputs['roleId']}"}
    if typ == "gcp:secretmanager/secret:Secret":
        return {"name": f"projects/123456789/secrets/{inputs['secretId']}"}
    if typ == "gcp:secretmanager/secretVersion:SecretVersion":
        return {"version": "1", "name": f"{inputs['secret']}/versions/1"}
    if typ == "gcp:cloudrunv2/service:Service":
        return {"uri": SERVICE_URL}
    return {}


def _resource_id(typ: str, name: str, inputs: dict[str, Any]) -> str:
    if typ == "gcp:compute/network:Network":
        return f"projects/{PROJECT}/global/networks/{inputs['name']}"
    if typ == "gcp:compute/subnetwork:Subnetwork":
        return f"projects/{PROJECT}/regions/{REGION}/subnetworks/{inputs['name']}"
    if typ == "gcp:secretmanager/secret:Secret":
        return f"projects/{PROJECT}/secrets/{inputs['secretId']}"
    return f"{name}-id"


@dataclass(frozen=True)
class Recorded:
    """One registered resource: its type token, logical name, inputs (camelCase, as sent) and id."""

    typ: str
    name: str
    inputs: dict[str, Any]
    id: str


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    """Records every resource; outputs are the inputs plus the computed properties above."""

    resources: list[Recorded] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        resource_id = _resource_id(args.typ, args.name, args.inputs)
        self.resources.append(Recorded(args.typ, args.name, dict(args.inputs), resource_id))
        return resource_id, {**args.inputs, **_computed_outputs(args.typ, args.name, args.inputs)}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        raise AssertionError(f"the program must not call data sources (called {args.token})")

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, name: str | None = None) -> Recorded:
        found = [r for r in self.of_type(typ) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {typ} {name or ''}, found {[r.name for r in found]}"
        return found[0]


@dataclass
class InfraStack:
    """Builds the program against the mocks with a given stack config."""

    mocks: RecordingMocks

    def configure(self, **config: str) -> None:
        """Set the stack config: gcp:project, gcp:region and `predcache:<key>=value` for each keyword."""
        values = {"gcp:project": PROJECT, "gcp:region": REGION}
        values |= {f"predcache:{key}": value for key, value in config.items()}
        pulumi.runtime.set_all_config(values)

    def build(self, **config: str) -> Any:
        """`predcache_infra.build(load_config())` under the config `configure(**config)` sets."""
        from predcache_infra import build, load_config

        self.configure(**config)
        return build(load_config())


def settled(deployment: Any) -> pulumi.Output[list[str]]:
    """An Output that resolves once every resource of `deployment` is registered (so the mocks saw it)."""
    return pulumi.Output.all(*[resource.urn for resource in _resources(deployment)])


def _resources(value: Any) -> Iterator[pulumi.Resource]:
    if isinstance(value, pulumi.Resource):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            yield from _resources(getattr(value, item.name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _resources(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _resources(item)


SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"  # how Pulumi marks a secret value on the wire


def unwrap_secret(value: Any) -> Any:
    """The plaintext of a recorded input Pulumi sent as a secret; fails if it was sent in the clear."""
    assert isinstance(value, dict) and SECRET_SIGNATURE in value, f"not sent as a secret: {value!r}"
    return value["value"]


def revision_template(recorded: Recorded) -> dict[str, Any]:
    """The revision (or task) template of a recorded Cloud Run service, worker pool or job."""
    template = recorded.inputs["template"]
    # A secret Output anywhere in the template makes Pulumi send the whole template as a secret.
    assert SECRET_SIGNATURE not in template, f"{recorded.name}: a secret value flowed into its template"
    if recorded.typ == "gcp:cloudrunv2/job:Job":
        template = template["template"]
    return template


def containers(recorded: Recorded) -> list[dict[str, Any]]:
    """The containers of a recorded Cloud Run service, worker pool or job."""
    return revision_template(recorded)["containers"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's environment variables by name."""
    return {env["name"]: env for env in container.get("envs", [])}
