"""The HMAC key of cached values: generated into Secret Manager, given to every container, rotated."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from tests.infra.mocks import InfraStack, containers, env_of, random_password, settled, unwrap_secret

CLOUD_RUN_TYPES = (
    "gcp:cloudrunv2/service:Service",
    "gcp:cloudrunv2/workerPool:WorkerPool",
    "gcp:cloudrunv2/job:Job",
)
PASSWORD = "random:index/randomPassword:RandomPassword"


def _secret_env(infra: InfraStack) -> list[dict[str, str]]:
    """Per container of every Cloud Run resource: each secret variable and the value its version holds."""
    secrets = {r.inputs["secretId"]: r for r in infra.mocks.of_type("gcp:secretmanager/secret:Secret")}
    versions = {r.name: r for r in infra.mocks.of_type("gcp:secretmanager/secretVersion:SecretVersion")}
    found = []
    for typ in CLOUD_RUN_TYPES:
        for resource in infra.mocks.of_type(typ):
            for container in containers(resource):
                found.append(
                    {
                        name: unwrap_secret(
                            versions[secrets[env["valueSource"]["secretKeyRef"]["secret"]].name].inputs[
                                "secretData"
                            ]
                        )
                        for name, env in env_of(container).items()
                        if "valueSource" in env
                    }
                )
    return found


def _value_key_keepers(infra: InfraStack) -> dict[str, dict[str, str]]:
    return {
        r.name: r.inputs["keepers"]
        for r in infra.mocks.of_type(PASSWORD)
        if r.name.startswith("value-hmac-key")
    }


@pulumi.runtime.test
def test_the_key_is_generated_and_every_container_gets_it_as_a_secret(infra: InfraStack) -> Any:
    deployment = infra.build()

    def check(_: Any) -> None:
        generated = infra.mocks.one(PASSWORD, "value-hmac-key-0").inputs
        assert (generated["length"], generated["special"]) == (64, False)
        assert _value_key_keepers(infra) == {"value-hmac-key-0": {"rotation": "0"}}
        environments = _secret_env(infra)
        assert len(environments) == 4  # web, worker, beat, migrations
        for env in environments:
            assert env["PREDCACHE_VALUE_HMAC_KEY"] == random_password("value-hmac-key-0")
            assert "PREDCACHE_VALUE_HMAC_OLD_KEY" not in env

    return settled(deployment).apply(check)


@pytest.mark.parametrize(
    ("rotation", "keepers", "current", "old"),
    [
        # 0 -> 1: slot 1 is generated, slot 0 (rotation 0's key) kept as the old key.
        ("1", {"value-hmac-key-0": "0", "value-hmac-key-1": "1"}, "value-hmac-key-1", "value-hmac-key-0"),
        # 1 -> 2: slot 0 is generated anew, slot 1 (rotation 1's key) untouched and now the old one.
        ("2", {"value-hmac-key-0": "2", "value-hmac-key-1": "1"}, "value-hmac-key-0", "value-hmac-key-1"),
        ("3", {"value-hmac-key-0": "2", "value-hmac-key-1": "3"}, "value-hmac-key-1", "value-hmac-key-0"),
    ],
)
@pytest.mark.parametrize("accept_old", [True, False])
@pulumi.runtime.test
def test_a_rotation_generates_one_key_and_keeps_the_one_it_replaces(
    infra: InfraStack, rotation: str, keepers: dict[str, str], current: str, old: str, accept_old: bool
) -> Any:
    deployment = infra.build(valueHmacKeyRotation=rotation, valueHmacAcceptOldKey=str(accept_old).lower())

    def check(_: Any) -> None:
        assert _value_key_keepers(infra) == {name: {"rotation": kept} for name, kept in keepers.items()}
        for env in _secret_env(infra):
            assert env["PREDCACHE_VALUE_HMAC_KEY"] == random_password(current)
            if accept_old:
                assert env["PREDCACHE_VALUE_HMAC_OLD_KEY"] == random_password(old)
            else:
                assert "PREDCACHE_VALUE_HMAC_OLD_KEY" not in env
        secrets = len(infra.mocks.of_type("gcp:secretmanager/secret:Secret"))
        assert secrets == (7 if accept_old else 6)

    return settled(deployment).apply(check)


def test_a_negative_rotation_is_refused(infra: InfraStack) -> None:
    from predcache_infra import ConfigError

    with pytest.raises(ConfigError, match="valueHmacKeyRotation"):
        infra.build(valueHmacKeyRotation="-1")
    assert infra.mocks.resources == []
