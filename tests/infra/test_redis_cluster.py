"""predcache:redisCluster swaps the Memorystore instance for a Redis Cluster, with AUTH (IAM) and TLS.

The app runs on it as it is (tests/test_redis_cluster.py, tests/test_redis_iam.py): the stack sets
REDIS_CLUSTER, REDIS_IAM_AUTH and REDIS_CA_CERT, grants the IAM connect role, and gives the Celery
broker a Redis instance of its own, since a cluster cannot be one.
"""

from __future__ import annotations

from typing import Any

import pulumi

from tests.infra.mocks import (
    REDIS_AUTH_STRING,
    REDIS_CA_PEM,
    REDIS_CLUSTER_HOST,
    REDIS_CLUSTER_PORT,
    REDIS_INSTANCE_HOST,
    REDIS_INSTANCE_PORT,
    InfraStack,
    containers,
    env_of,
    settled,
    unwrap_secret,
)


@pulumi.runtime.test
def test_cluster_switch_swaps_in_redis_cluster(infra: InfraStack) -> Any:
    deployment = infra.build(redisCluster="true", redisClusterShards="5")

    def check(_: Any) -> None:
        # The one Redis instance left is the Celery broker's (see below).
        assert [r.name for r in infra.mocks.of_type("gcp:redis/instance:Instance")] == ["broker"]
        cluster = infra.mocks.one("gcp:redis/cluster:Cluster").inputs
        assert cluster["shardCount"] == 5
        assert cluster["authorizationMode"] == "AUTH_MODE_IAM_AUTH"
        assert cluster["transitEncryptionMode"] == "TRANSIT_ENCRYPTION_MODE_SERVER_AUTHENTICATION"
        network = infra.mocks.one("gcp:compute/network:Network")
        subnet = infra.mocks.one("gcp:compute/subnetwork:Subnetwork")
        assert cluster["pscConfigs"] == [{"network": network.id}]
        policy = infra.mocks.one(
            "gcp:networkconnectivity/serviceConnectionPolicy:ServiceConnectionPolicy"
        ).inputs
        assert policy["serviceClass"] == "gcp-memorystore-redis"
        assert policy["network"] == network.id
        assert policy["pscConfig"]["subnetworks"] == [subnet.id]

    return settled(deployment).apply(check)


@pulumi.runtime.test
def test_cluster_endpoint_and_ca_reach_every_container(infra: InfraStack) -> Any:
    deployment = infra.build(redisCluster="true")

    def check(values: list[Any]) -> None:
        redis_host, _ = values
        assert redis_host == REDIS_CLUSTER_HOST
        ca_version = infra.mocks.one("gcp:secretmanager/secretVersion:SecretVersion", "redis-ca-cert")
        assert unwrap_secret(ca_version.inputs["secretData"]) == f"{REDIS_CA_PEM}\n"
        for typ in ("gcp:cloudrunv2/service:Service", "gcp:cloudrunv2/workerPool:WorkerPool"):
            for resource in infra.mocks.of_type(typ):
                env = env_of(containers(resource)[0])
                assert env["REDIS_URL"]["value"] == f"rediss://{REDIS_CLUSTER_HOST}:{REDIS_CLUSTER_PORT}/0"
                assert env["REDIS_CLUSTER"]["value"] == env["REDIS_IAM_AUTH"]["value"] == "true"
                assert "secretKeyRef" in env["REDIS_CA_CERT"]["valueSource"]
                # A cluster has no AUTH string: clients present IAM tokens, so there is no password secret.
                assert "REDIS_PASSWORD" not in env
                assert "secretKeyRef" in env["CELERY_BROKER_URL"]["valueSource"]
                assert "secretKeyRef" in env["CELERY_BROKER_CA_CERT"]["valueSource"]

    return pulumi.Output.all(deployment.exports()["redis_host"], settled(deployment)).apply(check)


@pulumi.runtime.test
def test_cluster_mode_grants_the_connect_role_and_drops_the_auth_secret(infra: InfraStack) -> Any:
    deployment = infra.build(redisCluster="true")

    def check(_: Any) -> None:
        roles = {r.inputs["role"] for r in infra.mocks.of_type("gcp:projects/iAMMember:IAMMember")}
        assert "roles/redis.dbConnectionUser" in roles
        secrets = {r.name for r in infra.mocks.of_type("gcp:secretmanager/secret:Secret")}
        assert "redis-password" not in secrets  # no AUTH string
        assert {"redis-ca-cert", "celery-broker-url", "celery-broker-ca-cert"} <= secrets

    return settled(deployment).apply(check)


@pulumi.runtime.test
def test_the_celery_broker_gets_a_redis_instance_of_its_own_that_never_evicts(infra: InfraStack) -> Any:
    deployment = infra.build(redisCluster="true")

    def check(_: Any) -> None:
        broker = infra.mocks.one("gcp:redis/instance:Instance", "broker").inputs
        assert broker["redisConfigs"] == {"maxmemory-policy": "noeviction"}
        assert (broker["authEnabled"], broker["transitEncryptionMode"]) == (True, "SERVER_AUTHENTICATION")
        assert broker["connectMode"] == "PRIVATE_SERVICE_ACCESS"
        url = infra.mocks.one("gcp:secretmanager/secretVersion:SecretVersion", "celery-broker-url")
        assert unwrap_secret(url.inputs["secretData"]) == (
            f"rediss://:{REDIS_AUTH_STRING}@{REDIS_INSTANCE_HOST}:{REDIS_INSTANCE_PORT}/0"
        )
        ca = infra.mocks.one("gcp:secretmanager/secretVersion:SecretVersion", "celery-broker-ca-cert")
        assert unwrap_secret(ca.inputs["secretData"]) == f"{REDIS_CA_PEM}\n"

    return settled(deployment).apply(check)


def test_the_cluster_option_no_longer_warns_that_the_app_cannot_use_it(
    infra: InfraStack, monkeypatch
) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: warnings.append(message))

    infra.build(redisCluster="true")

    assert warnings == []
