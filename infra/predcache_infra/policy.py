"""The security policy, checked before any resource is declared: an insecure stack config is refused."""

from __future__ import annotations

from predcache_infra.config import StackConfig
from predcache_infra.identity import app_project_roles

BROAD_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer", "roles/browser"})
# Granted per secret instead (secrets.py); at project level it would open every secret in the project.
PER_RESOURCE_ONLY_ROLES = frozenset({"roles/secretmanager.secretAccessor"})
SQL_ENCRYPTED_SSL_MODES = ("ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED")


class PolicyViolation(Exception):
    """The stack config asks for something the policy forbids; nothing has been created."""

    def __init__(self, violations: list[str]) -> None:
        self.violations = violations
        super().__init__("refusing an insecure stack config:\n  - " + "\n  - ".join(violations))


def is_broad_role(role: str) -> bool:
    """True for basic roles, *Admin/*Editor/*Owner roles, IAM roles, project-wide secrets."""
    name = role.removeprefix("roles/")
    return (
        role in BROAD_ROLES
        or role in PER_RESOURCE_ONLY_ROLES
        or name.lower().endswith(("admin", "editor", "owner"))
        or name.startswith(("iam.", "resourcemanager."))
    )


def violations(config: StackConfig) -> list[str]:
    """Every way `config` breaks the policy (empty when it complies)."""
    found = []
    if not config.redis_auth:
        found.append("Redis AUTH is off (predcache:redisAuth=false); Memorystore must require authentication")
    if config.redis_transit_encryption != "SERVER_AUTHENTICATION":
        found.append(
            f"Redis in-transit encryption is {config.redis_transit_encryption!r} "
            "(predcache:redisTransitEncryption); it must be SERVER_AUTHENTICATION (TLS)"
        )
    if config.sql_public_ip:
        found.append(
            "Cloud SQL would get a public IPv4 address (predcache:sqlPublicIp=true); private IP only"
        )
    if not config.sql_backups:
        found.append("Cloud SQL backups are off (predcache:sqlBackups=false)")
    if config.sql_ssl_mode not in SQL_ENCRYPTED_SSL_MODES:
        found.append(
            f"Cloud SQL accepts unencrypted connections (predcache:sqlSslMode={config.sql_ssl_mode!r})"
        )
    found.extend(
        f"the app's service account would hold the broad role {role!r} (predcache:appExtraRoles)"
        for role in app_project_roles(config)
        if is_broad_role(role)
    )
    return found


def enforce(config: StackConfig) -> None:
    """Raise PolicyViolation listing every violation; return quietly when the config complies."""
    found = violations(config)
    if found:
        raise PolicyViolation(found)
