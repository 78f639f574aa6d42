"""Stack configuration: `gcp:project` and `gcp:region` are required, every `predcache:*` key has a default."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pulumi

REDIS_TIERS = ("BASIC", "STANDARD_HA")
REDIS_CLUSTER_NODE_TYPES = (
    "REDIS_SHARED_CORE_NANO",
    "REDIS_STANDARD_SMALL",
    "REDIS_HIGHCPU_MEDIUM",
    "REDIS_HIGHMEM_MEDIUM",
    "REDIS_HIGHMEM_XLARGE",
    "REDIS_HIGHMEM_2XLARGE",
)
SQL_AVAILABILITY_TYPES = ("ZONAL", "REGIONAL")
_NAME_PREFIX = re.compile(r"^[a-z][a-z0-9-]{2,18}[a-z0-9]$")


class ConfigError(ValueError):
    """A stack config value is malformed or out of range (not a security question: see policy.py)."""


@dataclass(frozen=True)
class StackConfig:
    """Everything the program reads from the stack config, with the defaults used when a key is unset."""

    project: str
    region: str
    stack: str = "dev"
    name_prefix: str = "predcache"
    enable_apis: bool = True
    deletion_protection: bool = True
    # Network: the subnet Cloud Run's Direct VPC egress uses, and the range peered for private services.
    subnet_cidr: str = "10.20.0.0/24"
    private_services_prefix_length: int = 16
    # Memorystore for Redis (one node with a standby) or, with redis_cluster, Memorystore Redis Cluster.
    redis_cluster: bool = False
    redis_tier: str = "STANDARD_HA"
    redis_memory_gb: int = 1
    redis_version: str = "REDIS_7_2"
    redis_read_replicas: int = 0
    redis_auth: bool = True
    redis_transit_encryption: str = "SERVER_AUTHENTICATION"
    redis_maxmemory_policy: str = "volatile-lru"
    redis_cluster_shards: int = 3
    redis_cluster_replicas: int = 1
    redis_cluster_node_type: str = "REDIS_HIGHMEM_MEDIUM"
    # Cloud SQL for PostgreSQL.
    sql_version: str = "POSTGRES_16"
    sql_tier: str = "db-custom-1-3840"
    sql_edition: str = "ENTERPRISE"
    sql_availability: str = "ZONAL"
    sql_disk_gb: int = 10
    sql_database: str = "predcache"
    sql_user: str = "predcache"
    sql_public_ip: bool = False
    sql_backups: bool = True
    sql_ssl_mode: str = "ENCRYPTED_ONLY"
    # Artifact Registry and the image every Cloud Run resource runs.
    repository_id: str = "predcache"
    image: str = ""
    image_tag: str = "latest"
    # Cloud Run: the web service, the Celery worker pool, the beat pool (one instance; none without workers).
    web_min_instances: int = 1
    web_max_instances: int = 10
    web_cpu: str = "1"
    web_memory: str = "1Gi"
    # Requests one instance takes at once: gunicorn there runs WEB_CONCURRENCY 2 x GUNICORN_THREADS 4.
    web_request_concurrency: int = 8
    public: bool = True
    allowed_hosts: tuple[str, ...] = (".run.app",)
    # Celery workers (warming, refresh-ahead, scheduled purges); beat always runs exactly one
    # instance while workers run. 0 stops both (an image built before the Celery app existed).
    worker_instances: int = 1
    worker_cpu: str = "1"
    worker_memory: str = "1Gi"
    worker_command: tuple[str, ...] = ("celery", "-A", "predcache_site", "worker", "--loglevel=INFO")
    beat_command: tuple[str, ...] = ("celery", "-A", "predcache_site", "beat", "--loglevel=INFO")
    migrate_command: tuple[str, ...] = ("python", "manage.py", "migrate", "--noinput")
    # Vertex AI endpoint the deployed model is served from (infra/deploy_model.py deploys to it).
    vertex_endpoint_display_name: str = "predcache"
    # The HMAC key of stored values is generated; raise the rotation by one for a new key, with the old
    # one accepted for reading until valueHmacAcceptOldKey is false again (value_keys.py).
    value_hmac_key_rotation: int = 0
    value_hmac_accept_old_key: bool = False
    # Project roles granted to the app's service account on top of the ones it needs (policy-checked).
    app_extra_roles: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def image_uri(self) -> str:
        """The image Cloud Run runs: `image` if set, else `predcache:<image_tag>` in the stack's registry."""
        if self.image:
            return self.image
        registry = f"{self.region}-docker.pkg.dev/{self.project}/{self.repository_id}"
        return f"{registry}/predcache:{self.image_tag}"

    def name(self, suffix: str) -> str:
        """The GCP name of one of the stack's resources: `<name_prefix>-<suffix>`."""
        return f"{self.name_prefix}-{suffix}"


def validate(config: StackConfig) -> None:
    """Raise ConfigError naming every value that is malformed or out of range."""
    problems = [problem for check in _CHECKS if (problem := check(config))]
    if problems:
        raise ConfigError("invalid stack config:\n  - " + "\n  - ".join(problems))


def _check_prefix(c: StackConfig) -> str | None:
    if not _NAME_PREFIX.match(c.name_prefix):
        return f"namePrefix {c.name_prefix!r}: 4-20 characters, lowercase letters, digits and '-'"
    return None


def _check_web_scaling(c: StackConfig) -> str | None:
    if not 0 <= c.web_min_instances <= c.web_max_instances or c.web_max_instances < 1:
        scaling = f"{c.web_min_instances}/{c.web_max_instances}"
        return f"webMinInstances/webMaxInstances: need 0 <= min <= max and max >= 1 (got {scaling})"
    return None


def _check_workers(c: StackConfig) -> str | None:
    if c.worker_instances < 0:
        return f"workerInstances must be >= 0 (got {c.worker_instances})"
    return None


def _check_redis(c: StackConfig) -> str | None:
    if c.redis_tier not in REDIS_TIERS:
        return f"redisTier must be one of {REDIS_TIERS} (got {c.redis_tier!r})"
    if not 0 <= c.redis_read_replicas <= 5:
        return f"redisReadReplicas must be 0-5 (got {c.redis_read_replicas})"
    if c.redis_read_replicas and (c.redis_tier != "STANDARD_HA" or c.redis_memory_gb < 5):
        return "redisReadReplicas needs redisTier STANDARD_HA and redisMemoryGb >= 5 (a Memorystore limit)"
    if c.redis_memory_gb < 1:
        return f"redisMemoryGb must be >= 1 (got {c.redis_memory_gb})"
    return None


def _check_redis_cluster(c: StackConfig) -> str | None:
    if c.redis_cluster_node_type not in REDIS_CLUSTER_NODE_TYPES:
        return f"redisClusterNodeType must be one of {REDIS_CLUSTER_NODE_TYPES}"
    if c.redis_cluster_shards < 1 or not 0 <= c.redis_cluster_replicas <= 2:
        return "redisClusterShards must be >= 1 and redisClusterReplicas 0-2"
    return None


def _check_sql(c: StackConfig) -> str | None:
    if c.sql_availability not in SQL_AVAILABILITY_TYPES:
        return f"sqlAvailability must be one of {SQL_AVAILABILITY_TYPES} (got {c.sql_availability!r})"
    if not c.sql_version.startswith("POSTGRES_"):
        return f"sqlVersion must be a POSTGRES_* version (got {c.sql_version!r})"
    if c.sql_disk_gb < 10:
        return f"sqlDiskGb must be >= 10 (got {c.sql_disk_gb})"
    return None


def _check_value_keys(c: StackConfig) -> str | None:
    if c.value_hmac_key_rotation < 0:
        return f"valueHmacKeyRotation must be >= 0 (got {c.value_hmac_key_rotation})"
    return None


_CHECKS = (
    _check_prefix,
    _check_web_scaling,
    _check_workers,
    _check_value_keys,
    _check_redis,
    _check_redis_cluster,
    _check_sql,
)


def load_config() -> StackConfig:
    """Read the current stack's config (`gcp:*` and `predcache:*`), filling in defaults."""
    gcp = pulumi.Config("gcp")
    own = pulumi.Config("predcache")
    defaults = StackConfig(project=gcp.require("project"), region=gcp.require("region"))
    values: dict[str, Any] = {
        "project": defaults.project,
        "region": defaults.region,
        "stack": pulumi.get_stack(),
    }
    for name, default in vars(defaults).items():
        if name in values:
            continue
        key = _camel(name)
        if isinstance(default, bool):
            values[name] = own.get_bool(key, default)
        elif isinstance(default, int):
            values[name] = own.get_int(key, default)
        elif isinstance(default, str):
            values[name] = own.get(key, default)
        elif isinstance(default, tuple):
            values[name] = tuple(_string_list(own, key, default))
        else:
            values[name] = {**_string_map(own, key), "app": "predcache", "stack": values["stack"].lower()}
    return StackConfig(**values)


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def _string_list(own: pulumi.Config, key: str, default: tuple[str, ...]) -> list[str]:
    value = _json(own, key, list(default))
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"predcache:{key} must be a JSON list of strings")
    return value


def _string_map(own: pulumi.Config, key: str) -> dict[str, str]:
    value = _json(own, key, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f"predcache:{key} must be a JSON object of strings")
    return value


def _json(own: pulumi.Config, key: str, default: Any) -> Any:
    try:
        return own.get_object(key, default)
    except (ValueError, pulumi.ConfigTypeError) as malformed:
        raise ConfigError(f"predcache:{key} is not valid JSON: {malformed}") from malformed
