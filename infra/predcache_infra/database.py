"""Cloud SQL for PostgreSQL on a private IP only, with backups, the app's database and its user."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_random as random

from predcache_infra.config import StackConfig
from predcache_infra.network import Network


@dataclass(frozen=True)
class Database:
    """The PostgreSQL instance, the app's database and user, and that user's generated password."""

    instance: gcp.sql.DatabaseInstance
    database: gcp.sql.Database
    user: gcp.sql.User
    password: random.RandomPassword

    def url_without_password(self) -> pulumi.Output[str]:
        """`DATABASE_URL` for the app: private IP, TLS required; the password comes from its own secret."""
        return pulumi.Output.concat(
            "postgres://",
            self.user.name,
            "@",
            self.instance.private_ip_address,
            ":5432/",
            self.database.name,
            "?sslmode=require",
        )


def create_database(config: StackConfig, network: Network, opts: pulumi.ResourceOptions) -> Database:
    """Create the Cloud SQL instance (no public IPv4), the database and the user with a generated password."""
    password = random.RandomPassword("database-password", length=32, special=False, opts=opts)
    instance = gcp.sql.DatabaseInstance(
        "postgres",
        region=config.region,
        database_version=config.sql_version,
        deletion_protection=config.deletion_protection,
        settings={
            "tier": config.sql_tier,
            "edition": config.sql_edition,
            "availability_type": config.sql_availability,
            "disk_size": config.sql_disk_gb,
            "disk_autoresize": True,
            "deletion_protection_enabled": config.deletion_protection,
            "ip_configuration": {
                "ipv4_enabled": config.sql_public_ip,
                "private_network": network.vpc.id,
                "allocated_ip_range": network.private_services_range.name,
                "ssl_mode": config.sql_ssl_mode,
            },
            "backup_configuration": {
                "enabled": config.sql_backups,
                "point_in_time_recovery_enabled": config.sql_backups,
                "start_time": "03:00",
                "backup_retention_settings": {"retained_backups": 7},
            },
            "user_labels": config.labels,
        },
        opts=pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(depends_on=[network.private_services])
        ),
    )
    database = gcp.sql.Database("database", name=config.sql_database, instance=instance.name, opts=opts)
    user = gcp.sql.User(
        "user",
        name=config.sql_user,
        instance=instance.name,
        password=password.result,
        # PostgreSQL refuses to drop a role that owns objects; deleting the instance removes it anyway.
        deletion_policy="ABANDON",
        opts=opts,
    )
    return Database(instance=instance, database=database, user=user, password=password)
