"""The program declares the whole stack from only gcp:project and gcp:region, wired as designed."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pulumi
import pytest

from tests.infra.mocks import (
    PROJECT,
    REDIS_AUTH_STRING,
    REDIS_INSTANCE_HOST,
    REDIS_INSTANCE_PORT,
    REGION,
    SERVICE_ACCOUNT_EMAIL,
    SERVICE_URL,
    SQL_PRIVATE_IP,
    VERTEX_ENDPOINT_ID,
    InfraStack,
    containers,
    env_of,
    random_password,
    revision_template,
    settled,
    unwrap_secret,
)

# Every resource the issue lists, with how many of each the default config declares.
EXPECTED_RESOURCES = {
    "gcp:compute/network:Network": 1,
    "gcp:compute/subnetwork:Subnetwork": 1,
    "gcp:compute/globalAddress:GlobalAddress": 1,
    "gcp:servicenetworking/connection:Connection": 1,
    "gcp:redis/instance:Instance": 1,
    "gcp:sql/databaseInstance:DatabaseInstance": 1,
    "gcp:sql/database:Database": 1,
    "gcp:sql/user:User": 1,
    "gcp:secretmanager/secret:Secret": 6,
    "gcp:secretmanager/secretVersion:SecretVersion": 6,
    "gcp:secretmanager/secretIamMember:SecretIamMember": 6,
    "gcp:artifactregistry/repository:Repository": 1,
    "gcp:cloudrunv2/service:Service": 1,
    "gcp:cloudrunv2/workerPool:WorkerPool": 2,
    "gcp:cloudrunv2/job:Job": 1,
    "gcp:vertex/aiEndpoint:AiEndpoint": 1,
    "gcp:serviceaccount/account:Account": 1,
    "gcp:projects/iAMCustomRole:IAMCustomRole": 1,
}
CLOUD_RUN_TYPES = (
    "gcp:cloudrunv2/service:Service",
    "gcp:cloudrunv2/workerPool:WorkerPool",
    "gcp:cloudrunv2/job:Job",
)


@pulumi.runtime.test
def test_every_listed_resource_exists_with_only_project_and_region(infra: InfraStack) -> Any:
    deployment = infra.build()

    def check(_: Any) -> None:
        counts = {typ: len(infra.mocks.of_type(typ)) for typ in EXPECTED_RESOURCES}
        assert counts == EXPECTED_RESOURCES
        assert infra.mocks.of_type("gcp:redis/cluster:Cluster") == []
        psa_range = infra.mocks.one("gcp:compute/globalAddress:GlobalAddress")
        assert psa_range.inputs["purpose"] == "VPC_PEERING"
        peering = infra.mocks.one("gcp:servicenetworking/connection:Connection")
        assert peering.inputs["service"] == "servicenetworking.googleapis.com"
        assert peering.inputs["reservedPeeringRanges"] == [psa_range.inputs["name"]]
        assert infra.mocks.one("gcp:artifactregistry/repository:Repository").inputs["format"] == "DOCKER"

    return settled(deployment).apply(check)


@pulumi.runtime.test
def test_exports_service_url_redis_host_and_endpoint_name(infra: InfraStack) -> Any:
    exports = infra.build().exports()

    def check(values: list[Any]) -> None:
        service_url, redis_host, endpoint = values
        assert service_url == SERVICE_URL
        assert redis_host == REDIS_INSTANCE_HOST
        assert endpoint == f"projects/{PROJECT}/locations/{REGION}/endpoints/{VERTEX_ENDPOINT_ID}"

    return pulumi.Output.all(exports["service_url"], exports["redis_host"], exports["vertex_endpoint"]).apply(
        check
    )


@pulumi.runtime.test
def test_redis_instance_has_auth_and_tls_on(infra: InfraStack) -> Any:
    deployment = infra.build()
    instance = deployment.cache.resource

    def check(values: list[Any]) -> None:
        auth_enabled, transit_encryption, tier, connect_mode, _ = values
        assert auth_enabled is True
        assert transit_encryption == "SERVER_AUTHENTICATION"
        assert tier == "STANDARD_HA"
        assert connect_mode == "PRIVATE_SERVICE_ACCESS"
        recorded = infra.mocks.one("gcp:redis/instance:Instance")
        network = infra.mocks.one("gcp:compute/network:Network")
        assert recorded.inputs["authorizedNetwork"] == network.id
        assert recorded.inputs["readReplicasMode"] == "READ_REPLICAS_DISABLED"

    return pulumi.Output.all(
        instance.auth_enabled,
        instance.transit_encryption_mode,
        instance.tier,
        instance.connect_mode,
        settled(deployment),
    ).apply(check)


@pulumi.runtime.test
def test_redis_read_replicas_and_sizes_come_from_the_stack_config(infra: InfraStack) -> Any:
    deployment = infra.build(redisMemoryGb="5", redisReadReplicas="2", redisMaxmemoryPolicy="allkeys-lru")

    def check(_: Any) -> None:
        recorded = infra.mocks.one("gcp:redis/instance:Instance").inputs
        assert recorded["readReplicasMode"] == "READ_REPLICAS_ENABLED"
        assert recorded["replicaCount"] == 2
        assert recorded["memorySizeGb"] == 5
        assert recorded["redisConfigs"] == {"maxmemory-policy": "allkeys-lru"}

    return settled(deployment).apply(check)


@pulumi.runtime.test
def test_cloud_sql_is_private_only_with_backups_and_a_generated_password(infra: InfraStack) -> Any:
    deployment = infra.build()
    instance = deployment.database.instance

    def check(values: list[Any]) -> None:
        settings, _ = values
        ip = settings["ip_configuration"]
        assert ip["ipv4_enabled"] is False
        assert not ip.get("authorized_networks")
        assert ip["ssl_mode"] == "ENCRYPTED_ONLY"
        assert settings["backup_configuration"]["enabled"] is True
        network = infra.mocks.one("gcp:compute/network:Network")
        assert ip["private_network"] == network.id
        recorded = infra.mocks.one("gcp:sql/databaseInstance:DatabaseInstance").inputs
        assert recorded["databaseVersion"].startswith("POSTGRES_")
        user = infra.mocks.one("gcp:sql/user:User").inputs
        assert unwrap_secret(user["password"]) == random_password("database-password")
        assert infra.mocks.one("gcp:sql/database:Database").inputs["name"] == "predcache"

    return pulumi.Output.all(instance.settings, settled(deployment)).apply(check)


@pulumi.runtime.test
def test_web_service_uses_direct_vpc_egress_probes_and_configured_scaling(infra: InfraStack) -> Any:
    deployment = infra.build(webMinInstances="2", webMaxInstances="30", image="example.com/predcache:v7")

    def check(values: list[Any]) -> None:
        template, _ = values
        assert template["scaling"] == {"min_instance_count": 2, "max_instance_count": 30}
        assert template["service_account"] == SERVICE_ACCOUNT_EMAIL
        interface = template["vpc_access"]["network_interfaces"][0]
        assert (interface["network"], interface["subnetwork"]) == ("predcache-vpc", "predcache-subnet")
        (container,) = template["containers"]
        assert container["image"] == "example.com/predcache:v7"
        assert container["startup_probe"]["http_get"]["path"] == "/readyz"
        assert container["liveness_probe"]["http_get"]["path"] == "/healthz"

    return pulumi.Output.all(deployment.app.web.template, settled(deployment)).apply(check)


@pulumi.runtime.test
def test_every_cloud_run_resource_runs_in_the_vpc_as_the_app_account(infra: InfraStack) -> Any:
    deployment = infra.build()

    def check(_: Any) -> None:
        for typ in CLOUD_RUN_TYPES:
            for recorded in infra.mocks.of_type(typ):
                template = revision_template(recorded)
                assert template["serviceAccount"] == SERVICE_ACCOUNT_EMAIL, recorded.name
                assert template["vpcAccess"]["networkInterfaces"], recorded.name
                (container,) = containers(recorded)
                assert container["image"] == f"{REGION}-docker.pkg.dev/{PROJECT}/predcache/predcache:latest"

    return settled(deployment).apply(check)


@pulumi.runtime.test
def test_web_redis_host_comes_from_the_memorystore_resource(infra: InfraStack) -> Any:
    deployment = infra.build()

    def check(values: list[Any]) -> None:
        host, port, template, _ = values
        # The mocks give only the Memorystore instance this host and port; nothing else could supply them.
        assert (host, port) == (REDIS_INSTANCE_HOST, REDIS_INSTANCE_PORT)
        env = {e["name"]: e for e in template["containers"][0]["envs"]}
        assert env["REDIS_URL"]["value"] == f"rediss://{host}:{port}/0"
        assert REDIS_AUTH_STRING not in env["REDIS_URL"]["value"]
        assert (
            env["DATABASE_URL"]["value"]
            == f"postgres://predcache@{SQL_PRIVATE_IP}:5432/predcache?sslmode=require"
        )

    instance = deployment.cache.resource
    return pulumi.Output.all(
        instance.host, instance.port, deployment.app.web.template, settled(deployment)
    ).apply(check)


@pulumi.runtime.test
def test_one_beat_however_many_workers(infra: InfraStack) -> Any:
    deployment = infra.build(workerInstances="4")

    def check(_: Any) -> None:
        worker = infra.mocks.one("gcp:cloudrunv2/workerPool:WorkerPool", "worker")
        beat = infra.mocks.one("gcp:cloudrunv2/workerPool:WorkerPool", "beat")
        assert worker.inputs["scaling"] == {"scalingMode": "MANUAL", "manualInstanceCount": 4}
        assert beat.inputs["scaling"] == {"scalingMode": "MANUAL", "manualInstanceCount": 1}
        (worker_container,) = containers(worker)
        (beat_container,) = containers(beat)
        worker_command = [*worker_container["commands"], *worker_container["args"]]
        beat_command = [*beat_container["commands"], *beat_container["args"]]
        assert worker_command[:4] == ["celery", "-A", "predcache_site", "worker"]
        assert beat_command[:4] == ["celery", "-A", "predcache_site", "beat"]

    return settled(deployment).apply(check)


@pulumi.runtime.test
def test_no_workers_means_no_beat_either(infra: InfraStack) -> Any:
    deployment = infra.build(workerInstances="0")

    def check(_: Any) -> None:
        for name in ("worker", "beat"):
            pool = infra.mocks.one("gcp:cloudrunv2/workerPool:WorkerPool", name)
            assert pool.inputs["scaling"]["manualInstanceCount"] == 0, name

    return settled(deployment).apply(check)


@pulumi.runtime.test
def test_migration_job_runs_migrate_with_the_app_environment(infra: InfraStack) -> Any:
    deployment = infra.build()

    def check(_: Any) -> None:
        job = infra.mocks.one("gcp:cloudrunv2/job:Job")
        (container,) = containers(job)
        assert [*container["commands"], *container["args"]] == ["python", "manage.py", "migrate", "--noinput"]
        web = infra.mocks.one("gcp:cloudrunv2/service:Service")
        assert env_of(container).keys() == env_of(containers(web)[0]).keys()

    return settled(deployment).apply(check)


@pulumi.runtime.test
def test_vertex_endpoint_is_regional_with_a_numeric_id(infra: InfraStack) -> Any:
    deployment = infra.build()

    def check(_: Any) -> None:
        endpoint = infra.mocks.one("gcp:vertex/aiEndpoint:AiEndpoint").inputs
        assert endpoint["name"] == str(VERTEX_ENDPOINT_ID)
        assert endpoint["location"] == REGION

    return settled(deployment).apply(check)


@pulumi.runtime.test
def test_the_pulumi_entry_point_builds_the_stack_and_exports_its_outputs(
    infra: InfraStack, monkeypatch: pytest.MonkeyPatch
) -> Any:
    exported: dict[str, Any] = {}
    monkeypatch.setattr(pulumi, "export", exported.__setitem__)
    infra.configure()
    runpy.run_path(str(Path(__file__).resolve().parents[2] / "infra" / "__main__.py"), run_name="__main__")

    def check(values: dict[str, Any]) -> None:
        assert values["service_url"] == SERVICE_URL
        assert values["redis_host"] == REDIS_INSTANCE_HOST
        assert values["vertex_endpoint"].endswith(f"/endpoints/{VERTEX_ENDPOINT_ID}")
        assert values["migrate_job"] == "predcache-migrate"
        assert len(infra.mocks.of_type("gcp:cloudrunv2/service:Service")) == 1

    return pulumi.Output.all(**exported).apply(check)
