"""Memorystore: a Redis instance (STANDARD_HA, AUTH, TLS) by default, or a Redis Cluster past one node.

On Redis Cluster the Celery broker gets a Redis instance of its own (a cluster cannot be one): a
small BASIC instance with AUTH, TLS and ``noeviction``, so no queued task is ever evicted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pulumi
import pulumi_gcp as gcp

from predcache_infra.config import StackConfig
from predcache_infra.network import Network


@dataclass(frozen=True)
class Broker:
    """The Celery broker's Redis instance, and the URL (with its AUTH string: a secret) to reach it."""

    resource: gcp.redis.Instance
    url: pulumi.Output[str]
    ca_certificate: pulumi.Output[str]


@dataclass(frozen=True)
class Cache:
    """The Redis predcache talks to, and what a client needs to reach it."""

    resource: gcp.redis.Instance | gcp.redis.Cluster
    host: pulumi.Output[str]
    port: pulumi.Output[int]
    ca_certificate: pulumi.Output[str]
    # The AUTH string of an instance; a cluster has none (clients send IAM access tokens).
    auth_string: pulumi.Output[str] | None
    connection_policy: gcp.networkconnectivity.ServiceConnectionPolicy | None = None
    broker: Broker | None = None  # the Celery broker's own Redis, beside a cluster

    @property
    def is_cluster(self) -> bool:
        return isinstance(self.resource, gcp.redis.Cluster)


def create_cache(config: StackConfig, network: Network, opts: pulumi.ResourceOptions) -> Cache:
    """Create the Redis the stack config asks for (predcache:redisCluster switches to Redis Cluster)."""
    if config.redis_cluster:
        return _create_cluster(config, network, opts)
    return _create_instance(config, network, opts)


def _create_instance(config: StackConfig, network: Network, opts: pulumi.ResourceOptions) -> Cache:
    replicas: dict[str, Any] = {"read_replicas_mode": "READ_REPLICAS_DISABLED"}
    if config.redis_read_replicas:
        replicas = {
            "read_replicas_mode": "READ_REPLICAS_ENABLED",
            "replica_count": config.redis_read_replicas,
        }
    instance = gcp.redis.Instance(
        "redis",
        name=config.name("cache"),
        region=config.region,
        tier=config.redis_tier,
        memory_size_gb=config.redis_memory_gb,
        redis_version=config.redis_version,
        authorized_network=network.vpc.id,
        connect_mode="PRIVATE_SERVICE_ACCESS",
        reserved_ip_range=network.private_services_range.name,
        auth_enabled=config.redis_auth,
        transit_encryption_mode=config.redis_transit_encryption,
        redis_configs={"maxmemory-policy": config.redis_maxmemory_policy},
        deletion_protection=config.deletion_protection,
        labels=config.labels,
        **replicas,
        opts=pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(depends_on=[network.private_services])
        ),
    )
    return Cache(
        resource=instance,
        host=instance.host,
        port=instance.port,
        ca_certificate=instance.server_ca_certs.apply(_instance_ca_pem),
        auth_string=instance.auth_string,
    )


def _create_cluster(config: StackConfig, network: Network, opts: pulumi.ResourceOptions) -> Cache:
    # Redis Cluster is reached through Private Service Connect endpoints in our subnet, which this allows.
    policy = gcp.networkconnectivity.ServiceConnectionPolicy(
        "redis-connection-policy",
        name=config.name("redis-psc"),
        location=config.region,
        service_class="gcp-memorystore-redis",
        description="Lets Memorystore Redis Cluster create its endpoints in the predcache subnet",
        network=network.vpc.id,
        psc_config={"subnetworks": [network.subnet.id]},
        opts=opts,
    )
    cluster = gcp.redis.Cluster(
        "redis-cluster",
        name=config.name("cache"),
        region=config.region,
        shard_count=config.redis_cluster_shards,
        replica_count=config.redis_cluster_replicas,
        node_type=config.redis_cluster_node_type,
        psc_configs=[{"network": network.vpc.id}],
        authorization_mode="AUTH_MODE_IAM_AUTH" if config.redis_auth else "AUTH_MODE_DISABLED",
        transit_encryption_mode=(
            "TRANSIT_ENCRYPTION_MODE_SERVER_AUTHENTICATION"
            if config.redis_transit_encryption == "SERVER_AUTHENTICATION"
            else "TRANSIT_ENCRYPTION_MODE_DISABLED"
        ),
        redis_configs={"maxmemory-policy": config.redis_maxmemory_policy},
        zone_distribution_config={"mode": "MULTI_ZONE"},
        deletion_protection_enabled=config.deletion_protection,
        labels=config.labels,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[policy])),
    )
    endpoint = cluster.discovery_endpoints.apply(lambda endpoints: endpoints[0])
    return Cache(
        resource=cluster,
        host=endpoint.apply(lambda e: e.address or ""),
        port=endpoint.apply(lambda e: e.port or 6379),
        ca_certificate=cluster.managed_server_cas.apply(_cluster_ca_pem),
        auth_string=None,
        connection_policy=policy,
        broker=_create_broker(config, network, opts),
    )


def _create_broker(config: StackConfig, network: Network, opts: pulumi.ResourceOptions) -> Broker:
    instance = gcp.redis.Instance(
        "broker",
        name=config.name("broker"),
        region=config.region,
        tier="BASIC",  # a lost broker loses queued tasks only; schedules and runs are in the database
        memory_size_gb=1,
        redis_version=config.redis_version,
        authorized_network=network.vpc.id,
        connect_mode="PRIVATE_SERVICE_ACCESS",
        reserved_ip_range=network.private_services_range.name,
        auth_enabled=config.redis_auth,
        transit_encryption_mode=config.redis_transit_encryption,
        redis_configs={"maxmemory-policy": "noeviction"},
        deletion_protection=config.deletion_protection,
        labels=config.labels,
        opts=pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(depends_on=[network.private_services])
        ),
    )
    url = pulumi.Output.all(instance.auth_string, instance.host, instance.port).apply(
        lambda values: f"rediss://:{quote(values[0] or '', safe='')}@{values[1]}:{values[2]}/0"
    )
    return Broker(
        resource=instance,
        url=pulumi.Output.secret(url),
        ca_certificate=instance.server_ca_certs.apply(_instance_ca_pem),
    )


def _instance_ca_pem(certs: Sequence[gcp.redis.outputs.InstanceServerCaCert] | None) -> str:
    return _pem_bundle(cert.cert or "" for cert in certs or [])


def _cluster_ca_pem(cas: Sequence[gcp.redis.outputs.ClusterManagedServerCa] | None) -> str:
    return _pem_bundle(
        certificate
        for ca in cas or []
        for chain in ca.ca_certs or []
        for certificate in chain.certificates or []
    )


def _pem_bundle(certificates: Iterable[str]) -> str:
    return "".join(f"{pem.strip()}\n" for pem in certificates if pem.strip())
