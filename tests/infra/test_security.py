"""Secrets reach Cloud Run only as Secret Manager references, the app's account holds nothing broad, and the
program's own policy check refuses insecure configs before declaring anything."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pulumi
import pytest

from tests.infra.mocks import (
    PROJECT,
    REDIS_AUTH_STRING,
    REDIS_CA_PEM,
    SERVICE_ACCOUNT_EMAIL,
    InfraStack,
    Recorded,
    containers,
    env_of,
    random_password,
    settled,
    unwrap_secret,
)
from tests.support.stack_env import STACK_SECURITY_ENV

CLOUD_RUN_TYPES = (
    "gcp:cloudrunv2/service:Service",
    "gcp:cloudrunv2/workerPool:WorkerPool",
    "gcp:cloudrunv2/job:Job",
)
APP_MEMBER = f"serviceAccount:{SERVICE_ACCOUNT_EMAIL}"
# Each secret environment variable and the value its Secret Manager version must hold.
SECRET_ENV = {
    "DJANGO_SECRET_KEY": random_password("django-secret-key"),
    "PREDCACHE_METRICS_TOKEN": random_password("metrics-token"),
    "PREDCACHE_VALUE_HMAC_KEY": random_password("value-hmac-key-0"),
    "DATABASE_PASSWORD": random_password("database-password"),
    "REDIS_PASSWORD": REDIS_AUTH_STRING,
    "REDIS_CA_CERT": f"{REDIS_CA_PEM}\n",
}
# Written independently of predcache_infra.policy, so a gap in the policy cannot hide here.
BASIC_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
IAM_BINDING_TYPES = (
    "gcp:projects/iAMMember:IAMMember",
    "gcp:projects/iAMBinding:IAMBinding",
    "gcp:projects/iAMPolicy:IAMPolicy",
    "gcp:secretmanager/secretIamMember:SecretIamMember",
    "gcp:vertex/aiEndpointIamMember:AiEndpointIamMember",
    "gcp:serviceaccount/iAMMember:IAMMember",
)


def _is_broad(role: str) -> bool:
    return role in BASIC_ROLES or role.lower().endswith("admin") or role.startswith("roles/iam.")


@pulumi.runtime.test
def test_secrets_reach_cloud_run_only_as_secret_references(infra: InfraStack) -> Any:
    deployment = infra.build()

    def check(_: Any) -> None:
        secrets = {r.inputs["secretId"]: r for r in infra.mocks.of_type("gcp:secretmanager/secret:Secret")}
        versions = {r.name: r for r in infra.mocks.of_type("gcp:secretmanager/secretVersion:SecretVersion")}
        cloud_run = [r for typ in CLOUD_RUN_TYPES for r in infra.mocks.of_type(typ)]
        assert len(cloud_run) == 4
        for resource in cloud_run:
            for container in containers(resource):
                env = env_of(container)
                for name, plaintext in SECRET_ENV.items():
                    assert "value" not in env[name], f"{resource.name}: {name} is a plain value"
                    ref = env[name]["valueSource"]["secretKeyRef"]
                    secret = secrets[ref["secret"]]
                    version = versions[secret.name]
                    assert ref["version"] == "1"
                    assert version.inputs["secret"] == secret.id
                    assert unwrap_secret(version.inputs["secretData"]) == plaintext
                _assert_no_secret_in_plain_values(resource, env)

    return settled(deployment).apply(check)


def _assert_no_secret_in_plain_values(resource: Recorded, env: dict[str, dict[str, Any]]) -> None:
    for name, variable in env.items():
        if "valueSource" in variable:
            continue
        value = variable["value"]
        assert isinstance(value, str), f"{resource.name}: {name} is not a plain string"
        for plaintext in SECRET_ENV.values():
            assert plaintext.strip() not in value, f"{resource.name}: {name} contains a secret"
        assert "BEGIN CERTIFICATE" not in value
        if "://" in value:
            assert urlsplit(value).password is None, f"{resource.name}: {name} carries a password"


@pulumi.runtime.test
def test_app_service_account_has_no_broad_role(infra: InfraStack) -> Any:
    deployment = infra.build()

    def check(_: Any) -> None:
        bindings = [r for typ in IAM_BINDING_TYPES for r in infra.mocks.of_type(typ)]
        app_bindings = [r for r in bindings if r.inputs.get("member") == APP_MEMBER]
        assert len(app_bindings) == len(bindings), "every IAM binding the stack makes is for the app"
        for binding in app_bindings:
            assert not _is_broad(binding.inputs["role"]), binding.inputs["role"]

        project_roles = {
            r.inputs["role"] for r in app_bindings if r.typ == "gcp:projects/iAMMember:IAMMember"
        }
        custom_role = infra.mocks.one("gcp:projects/iAMCustomRole:IAMCustomRole").inputs
        predictor = f"projects/{PROJECT}/roles/{custom_role['roleId']}"
        assert project_roles == {predictor, "roles/cloudsql.client"}
        assert sorted(custom_role["permissions"]) == [
            "aiplatform.endpoints.get",
            "aiplatform.endpoints.predict",
        ]

        # Secret access is granted per secret, on exactly the stack's own secrets.
        accessors = [r for r in app_bindings if r.typ == "gcp:secretmanager/secretIamMember:SecretIamMember"]
        assert {r.inputs["role"] for r in accessors} == {"roles/secretmanager.secretAccessor"}
        secret_ids = {r.id for r in infra.mocks.of_type("gcp:secretmanager/secret:Secret")}
        assert sorted(r.inputs["secretId"] for r in accessors) == sorted(secret_ids)

    return settled(deployment).apply(check)


@pulumi.runtime.test
def test_a_narrow_extra_role_is_accepted_and_granted(infra: InfraStack) -> Any:
    deployment = infra.build(appExtraRoles='["roles/cloudtrace.agent"]')

    def check(_: Any) -> None:
        roles = {r.inputs["role"] for r in infra.mocks.of_type("gcp:projects/iAMMember:IAMMember")}
        assert "roles/cloudtrace.agent" in roles

    return settled(deployment).apply(check)


INSECURE_CONFIGS = {
    "redis AUTH off": ({"redisAuth": "false"}, "redisAuth"),
    "redis TLS off": ({"redisTransitEncryption": "DISABLED"}, "redisTransitEncryption"),
    "redis cluster AUTH off": ({"redisCluster": "true", "redisAuth": "false"}, "redisAuth"),
    "cloud sql public IP": ({"sqlPublicIp": "true"}, "sqlPublicIp"),
    "cloud sql backups off": ({"sqlBackups": "false"}, "sqlBackups"),
    "cloud sql plaintext allowed": ({"sqlSslMode": "ALLOW_UNENCRYPTED_AND_ENCRYPTED"}, "sqlSslMode"),
    "owner": ({"appExtraRoles": '["roles/owner"]'}, "roles/owner"),
    "editor": ({"appExtraRoles": '["roles/editor"]'}, "roles/editor"),
    "an admin role": ({"appExtraRoles": '["roles/run.admin"]'}, "roles/run.admin"),
    "a service editor role": ({"appExtraRoles": '["roles/cloudsql.editor"]'}, "roles/cloudsql.editor"),
    "impersonation": ({"appExtraRoles": '["roles/iam.serviceAccountTokenCreator"]'}, "TokenCreator"),
    "every secret in the project": (
        {"appExtraRoles": '["roles/secretmanager.secretAccessor"]'},
        "secretmanager.secretAccessor",
    ),
}


@pytest.mark.parametrize(("config", "named"), INSECURE_CONFIGS.values(), ids=INSECURE_CONFIGS.keys())
def test_policy_refuses_insecure_configs_before_creating_anything(
    infra: InfraStack, config: dict[str, str], named: str
) -> None:
    from predcache_infra import PolicyViolation

    @pulumi.runtime.test
    def deploy() -> Any:
        return settled(infra.build(**config))

    with pytest.raises(PolicyViolation, match=named) as refused:
        deploy()
    assert len(refused.value.violations) == 1
    assert infra.mocks.resources == []


def test_policy_lists_every_violation_at_once(infra: InfraStack) -> None:
    from predcache_infra import PolicyViolation

    with pytest.raises(PolicyViolation) as refused:
        infra.build(redisAuth="false", redisTransitEncryption="DISABLED", sqlPublicIp="true")
    assert len(refused.value.violations) == 3
    assert infra.mocks.resources == []


@pulumi.runtime.test
def test_every_container_gets_the_security_settings_the_deploy_check_is_run_with(infra: InfraStack) -> Any:
    deployment = infra.build()

    def check(_: Any) -> None:
        for kind in CLOUD_RUN_TYPES:
            for resource in infra.mocks.of_type(kind):
                for container in containers(resource):
                    env = env_of(container)
                    given = {name: env[name]["value"] for name in STACK_SECURITY_ENV if name in env}
                    assert given == STACK_SECURITY_ENV, (kind, resource.name)

    return settled(deployment).apply(check)
