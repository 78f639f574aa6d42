"""Secret Manager: one secret per sensitive value, each readable by the app's service account."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from predcache_infra.config import StackConfig

SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"


@dataclass(frozen=True)
class AppSecret:
    """A secret, its current version, and the app's read access to it; Cloud Run gets it as `env_name`."""

    env_name: str
    secret: gcp.secretmanager.Secret
    version: gcp.secretmanager.SecretVersion
    access: gcp.secretmanager.SecretIamMember


def create_secrets(
    config: StackConfig,
    values: Mapping[str, pulumi.Input[str]],
    reader: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> dict[str, AppSecret]:
    """Store each value (keyed by the environment variable it becomes); `reader` may access these only."""
    return {
        env_name: _create_secret(config, env_name, value, reader, opts) for env_name, value in values.items()
    }


def _create_secret(
    config: StackConfig,
    env_name: str,
    value: pulumi.Input[str],
    reader: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> AppSecret:
    slug = env_name.lower().replace("_", "-")
    secret = gcp.secretmanager.Secret(
        slug,
        secret_id=config.name(slug),
        replication={"auto": {}},
        labels=config.labels,
        opts=opts,
    )
    version = gcp.secretmanager.SecretVersion(
        slug,
        secret=secret.id,
        secret_data=pulumi.Output.secret(value),
        opts=opts,
    )
    access = gcp.secretmanager.SecretIamMember(
        f"{slug}-app-access",
        secret_id=secret.id,
        role=SECRET_ACCESSOR,
        member=reader,
        opts=opts,
    )
    return AppSecret(env_name=env_name, secret=secret, version=version, access=access)
