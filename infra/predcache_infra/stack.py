"""The whole stack: `build(config)` checks the policy, declares every resource and returns what to export."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_random as random

from predcache_infra import policy
from predcache_infra.app import App, AppInputs, app_environment, create_app
from predcache_infra.cache import Cache, create_cache
from predcache_infra.config import StackConfig
from predcache_infra.database import Database, create_database
from predcache_infra.identity import Identity, create_identity
from predcache_infra.network import Network, create_network
from predcache_infra.registry import create_registry
from predcache_infra.secrets import AppSecret, create_secrets
from predcache_infra.value_keys import ValueKeys, create_value_keys
from predcache_infra.vertex import VertexEndpoint, create_vertex_endpoint

REQUIRED_APIS = (
    "aiplatform.googleapis.com",
    "artifactregistry.googleapis.com",
    "compute.googleapis.com",
    "iam.googleapis.com",
    "networkconnectivity.googleapis.com",
    "redis.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
)


@dataclass(frozen=True)
class Deployment:
    """Every part of the stack, for the tests, and the values the stack exports."""

    config: StackConfig
    apis: list[gcp.projects.Service]
    network: Network
    cache: Cache
    database: Database
    registry: gcp.artifactregistry.Repository
    vertex: VertexEndpoint
    identity: Identity
    django_secret_key: random.RandomPassword
    value_keys: ValueKeys
    secrets: dict[str, AppSecret]
    app: App

    def exports(self) -> dict[str, pulumi.Input[str]]:
        """The stack outputs: service URL, Redis host, endpoint resource name, and what next steps need."""
        return {
            "service_url": self.app.web.uri,
            "redis_host": self.cache.host,
            "vertex_endpoint": self.vertex.resource_name,
            "image": self.config.image_uri,
            "migrate_job": self.app.migrate.name,
            "service_account": self.identity.account.email,
            "sql_connection_name": self.database.instance.connection_name,
        }


def build(config: StackConfig) -> Deployment:
    """Refuse an insecure config (policy.PolicyViolation, before any resource), then declare the stack."""
    policy.enforce(config)
    apis = _enable_apis(config)
    opts = pulumi.ResourceOptions(depends_on=apis)
    network = create_network(config, opts)
    cache = create_cache(config, network, opts)
    database = create_database(config, network, opts)
    registry = create_registry(config, opts)
    vertex = create_vertex_endpoint(config, opts)
    identity = create_identity(config, opts)
    django_secret_key = random.RandomPassword("django-secret-key", length=64, special=False, opts=opts)
    # The service takes traffic from anywhere: /metrics answers only Prometheus's bearer token.
    metrics_token = random.RandomPassword("metrics-token", length=48, special=False, opts=opts)
    # Whoever can write to Redis cannot have clients served forged predictions: values carry an HMAC tag.
    value_keys = create_value_keys(config, opts)

    secret_values: dict[str, pulumi.Input[str]] = {
        "DJANGO_SECRET_KEY": django_secret_key.result,
        "PREDCACHE_METRICS_TOKEN": metrics_token.result,
        "PREDCACHE_VALUE_HMAC_KEY": value_keys.current.result,
        "DATABASE_PASSWORD": database.password.result,
        "REDIS_CA_CERT": cache.ca_certificate,
    }
    if value_keys.old is not None:
        secret_values["PREDCACHE_VALUE_HMAC_OLD_KEY"] = value_keys.old.result
    if cache.auth_string is not None:
        secret_values["REDIS_PASSWORD"] = cache.auth_string
    if cache.broker is not None:  # beside a Redis Cluster: the URL holds the broker's AUTH string
        secret_values["CELERY_BROKER_URL"] = cache.broker.url
        secret_values["CELERY_BROKER_CA_CERT"] = cache.broker.ca_certificate
    secrets = create_secrets(config, secret_values, identity.member, opts)

    plain_env = app_environment(
        config,
        redis_host=cache.host,
        redis_port=cache.port,
        database_url=database.url_without_password(),
        vertex_endpoint=vertex.resource_name,
    )
    app_inputs = AppInputs(
        network=network,
        service_account_email=identity.account.email,
        plain_env=plain_env,
        secrets=secrets,
        start_after=[*identity.bindings, *(s.access for s in secrets.values()), registry],
    )
    app = create_app(config, app_inputs, opts)
    return Deployment(
        config=config,
        apis=apis,
        network=network,
        cache=cache,
        database=database,
        registry=registry,
        vertex=vertex,
        identity=identity,
        django_secret_key=django_secret_key,
        value_keys=value_keys,
        secrets=secrets,
        app=app,
    )


def _enable_apis(config: StackConfig) -> list[gcp.projects.Service]:
    if not config.enable_apis:
        return []
    return [
        gcp.projects.Service(
            api.split(".")[0],
            project=config.project,
            service=api,
            # Other workloads in the project may use the same APIs; never turn them off on destroy.
            disable_on_destroy=False,
        )
        for api in REQUIRED_APIS
    ]
