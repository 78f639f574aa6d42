"""Cloud Run: the web service, the Celery worker and beat worker pools, and the migration job.

All four run the same image as the app's service account, reach Memorystore and Cloud SQL through Direct
VPC egress, and get the same environment:

plain values (nothing secret in them)
    DATABASE_URL        postgres://USER@PRIVATE_IP:5432/DB?sslmode=require   (no password)
    REDIS_URL           rediss://HOST:PORT/0, HOST and PORT from the Memorystore resource (no password)
    REDIS_CLUSTER       "true" on Redis Cluster (absent otherwise)
    REDIS_IAM_AUTH      "true" on Redis Cluster: each connection logs in with an IAM access token of the
                        service account (roles/redis.dbConnectionUser), fetched by the app
    PREDCACHE_VERTEX_ENDPOINT   projects/P/locations/L/endpoints/E
    GOOGLE_CLOUD_PROJECT, GOOGLE_CLOUD_REGION, DJANGO_ALLOWED_HOSTS, DJANGO_CSRF_TRUSTED_ORIGINS,
    DJANGO_SECURE_PROXY_SSL_HEADER, DJANGO_SECURE_SSL_REDIRECT, DJANGO_SECURE_COOKIES,
    DJANGO_SECURE_HSTS_SECONDS
secret references (Secret Manager, resolved by Cloud Run when an instance starts)
    DJANGO_SECRET_KEY, PREDCACHE_METRICS_TOKEN, PREDCACHE_VALUE_HMAC_KEY (and PREDCACHE_VALUE_HMAC_OLD_KEY
    while a rotation accepts the old one), DATABASE_PASSWORD,
    REDIS_PASSWORD (the AUTH string; not on Redis Cluster),
    REDIS_CA_CERT (PEM of the Memorystore server CA, to verify its TLS certificate),
    on Redis Cluster CELERY_BROKER_URL (the broker's own instance, rediss:// with its AUTH string)
    and CELERY_BROKER_CA_CERT (that instance's server CA)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp

from predcache_infra.config import StackConfig
from predcache_infra.network import Network
from predcache_infra.secrets import AppSecret

CONTAINER_PORT = 8080
HSTS_SECONDS = 31_536_000


@dataclass(frozen=True)
class AppInputs:
    """What the Cloud Run resources are wired to: the network, the other resources' outputs, the secrets."""

    network: Network
    service_account_email: pulumi.Output[str]
    plain_env: Mapping[str, pulumi.Input[str]]
    secrets: Mapping[str, AppSecret]
    # Resources that must exist before a revision starts: its IAM grants, the image's registry.
    start_after: Sequence[pulumi.Resource]


@dataclass(frozen=True)
class App:
    """The four Cloud Run resources."""

    web: gcp.cloudrunv2.Service
    worker: gcp.cloudrunv2.WorkerPool
    beat: gcp.cloudrunv2.WorkerPool
    migrate: gcp.cloudrunv2.Job


def app_environment(
    config: StackConfig,
    *,
    redis_host: pulumi.Input[str],
    redis_port: pulumi.Input[int],
    database_url: pulumi.Input[str],
    vertex_endpoint: pulumi.Input[str],
) -> dict[str, pulumi.Input[str]]:
    """The plain (non-secret) environment every container gets."""
    env: dict[str, pulumi.Input[str]] = {
        "DATABASE_URL": database_url,
        "REDIS_URL": pulumi.Output.format("rediss://{0}:{1}/0", redis_host, redis_port),
        "PREDCACHE_VERTEX_ENDPOINT": vertex_endpoint,
        "GOOGLE_CLOUD_PROJECT": config.project,
        "GOOGLE_CLOUD_REGION": config.region,
        "DJANGO_ALLOWED_HOSTS": ",".join(config.allowed_hosts),
        "DJANGO_CSRF_TRUSTED_ORIGINS": ",".join(_origin(host) for host in config.allowed_hosts),
        "DJANGO_SECURE_PROXY_SSL_HEADER": "true",
        "DJANGO_SECURE_SSL_REDIRECT": "true",
        "DJANGO_SECURE_COOKIES": "true",
        "DJANGO_SECURE_HSTS_SECONDS": str(HSTS_SECONDS),
        # The service's hosts are HTTPS only (Cloud Run), and so are their subdomains; `preload` only
        # consents to the browsers' preload list: the domain's owner still decides to submit it.
        "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
        "DJANGO_SECURE_HSTS_PRELOAD": "true",
    }
    if config.redis_cluster:
        env |= {"REDIS_CLUSTER": "true", "REDIS_IAM_AUTH": "true"}
    return env


def create_app(config: StackConfig, inputs: AppInputs, opts: pulumi.ResourceOptions) -> App:
    """Create the web service, the worker and beat pools and the migration job."""
    run_opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=list(inputs.start_after)))
    return App(
        web=_web_service(config, inputs, run_opts),
        worker=_worker_pool(
            config, inputs, "worker", config.worker_command, config.worker_instances, run_opts
        ),
        # Celery beat must run exactly once, or every schedule fires once per copy; with no worker to take
        # its tasks it does not run at all (workerInstances=0 stops Celery, e.g. before the image has it).
        beat=_worker_pool(
            config, inputs, "beat", config.beat_command, min(config.worker_instances, 1), run_opts
        ),
        migrate=_migrate_job(config, inputs, run_opts),
    )


def _web_service(
    config: StackConfig, inputs: AppInputs, opts: pulumi.ResourceOptions
) -> gcp.cloudrunv2.Service:
    container = {
        "image": config.image_uri,
        "ports": {"name": "http1", "container_port": CONTAINER_PORT},
        "envs": _envs(inputs),
        "resources": {
            "limits": {"cpu": config.web_cpu, "memory": config.web_memory},
            "cpu_idle": True,
            "startup_cpu_boost": True,
        },
        # /readyz checks the database (Redis is reported, not required): a new instance takes traffic once it
        # answers, also during a Memorystore failover. Liveness uses /healthz (process up) so a Redis outage,
        # which predcache serves through, never restarts instances.
        "startup_probe": {
            "http_get": {"path": "/readyz", "port": CONTAINER_PORT},
            "period_seconds": 5,
            "timeout_seconds": 3,
            "failure_threshold": 24,
        },
        "liveness_probe": {
            "http_get": {"path": "/healthz", "port": CONTAINER_PORT},
            "period_seconds": 15,
            "timeout_seconds": 3,
            "failure_threshold": 3,
        },
    }
    return gcp.cloudrunv2.Service(
        "web",
        name=config.name("web"),
        location=config.region,
        ingress="INGRESS_TRAFFIC_ALL",
        # Clients authenticate with predcache API keys, so Cloud Run's IAM invoker check is off when public.
        invoker_iam_disabled=config.public,
        deletion_protection=False,
        labels=config.labels,
        template={
            "service_account": inputs.service_account_email,
            "max_instance_request_concurrency": config.web_request_concurrency,
            "timeout": "60s",
            "scaling": {
                "min_instance_count": config.web_min_instances,
                "max_instance_count": config.web_max_instances,
            },
            "vpc_access": _vpc_access(inputs.network),
            "containers": [container],
        },
        opts=opts,
    )


def _worker_pool(
    config: StackConfig,
    inputs: AppInputs,
    role: str,
    command: Sequence[str],
    instances: int,
    opts: pulumi.ResourceOptions,
) -> gcp.cloudrunv2.WorkerPool:
    return gcp.cloudrunv2.WorkerPool(
        role,
        name=config.name(role),
        location=config.region,
        deletion_protection=False,
        labels=config.labels,
        scaling={"scaling_mode": "MANUAL", "manual_instance_count": instances},
        template={
            "service_account": inputs.service_account_email,
            "vpc_access": _vpc_access(inputs.network),
            "containers": [
                {
                    "image": config.image_uri,
                    "commands": list(command[:1]),
                    "args": list(command[1:]),
                    "envs": _envs(inputs),
                    "resources": {"limits": {"cpu": config.worker_cpu, "memory": config.worker_memory}},
                }
            ],
        },
        opts=opts,
    )


def _migrate_job(config: StackConfig, inputs: AppInputs, opts: pulumi.ResourceOptions) -> gcp.cloudrunv2.Job:
    return gcp.cloudrunv2.Job(
        "migrate",
        name=config.name("migrate"),
        location=config.region,
        deletion_protection=False,
        labels=config.labels,
        template={
            "task_count": 1,
            "template": {
                "service_account": inputs.service_account_email,
                "max_retries": 1,
                "timeout": "900s",
                "vpc_access": _vpc_access(inputs.network),
                "containers": [
                    {
                        "image": config.image_uri,
                        "commands": list(config.migrate_command[:1]),
                        "args": list(config.migrate_command[1:]),
                        "envs": _envs(inputs),
                        "resources": {"limits": {"cpu": config.worker_cpu, "memory": config.worker_memory}},
                    }
                ],
            },
        },
        opts=opts,
    )


def _vpc_access(network: Network) -> dict[str, Any]:
    # Direct VPC egress (no connector); only private ranges go through the VPC, Google APIs go direct.
    return {
        "network_interfaces": [{"network": network.vpc.name, "subnetwork": network.subnet.name}],
        "egress": "PRIVATE_RANGES_ONLY",
    }


def _envs(inputs: AppInputs) -> list[dict[str, Any]]:
    plain = [{"name": name, "value": value} for name, value in inputs.plain_env.items()]
    secret = [
        {
            "name": env_name,
            "value_source": {
                "secret_key_ref": {
                    "secret": app_secret.secret.secret_id,
                    "version": app_secret.version.version,
                }
            },
        }
        for env_name, app_secret in inputs.secrets.items()
    ]
    return plain + secret


def _origin(host: str) -> str:
    return f"https://*{host}" if host.startswith(".") else f"https://{host}"
