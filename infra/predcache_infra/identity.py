"""The app's service account and its project grants: Vertex AI predict, Cloud SQL client, nothing broad."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from predcache_infra.config import StackConfig

# What predcache's vertex backend calls: predict, and get (it follows the endpoint's deployed model version).
PREDICT_PERMISSIONS = ("aiplatform.endpoints.predict", "aiplatform.endpoints.get")


@dataclass(frozen=True)
class Identity:
    """The service account every Cloud Run resource runs as, and its project-level bindings."""

    account: gcp.serviceaccount.Account
    predictor_role: gcp.projects.IAMCustomRole
    bindings: list[gcp.projects.IAMMember]

    @property
    def member(self) -> pulumi.Output[str]:
        return self.account.member


def app_project_roles(config: StackConfig) -> tuple[str, ...]:
    """The predefined roles the app holds on the project (the predict role is the custom one)."""
    roles = ["roles/cloudsql.client"]
    if config.redis_cluster:
        # Redis Cluster authenticates clients with IAM tokens; this role holds only redis.clusters.connect.
        roles.append("roles/redis.dbConnectionUser")
    return (*roles, *config.app_extra_roles)


def create_identity(config: StackConfig, opts: pulumi.ResourceOptions) -> Identity:
    """Create the app's service account, its predict-only custom role and its project bindings."""
    account = gcp.serviceaccount.Account(
        "app",
        account_id=config.name("app"),
        display_name="predcache app (web, Celery worker and beat, migrations)",
        opts=opts,
    )
    predictor_role = gcp.projects.IAMCustomRole(
        "predictor",
        role_id=config.name_prefix.replace("-", "_") + "_predictor",
        title="predcache Vertex AI predictor",
        description="Online prediction on Vertex AI endpoints and reading their deployed models",
        permissions=list(PREDICT_PERMISSIONS),
        opts=opts,
    )
    bindings = [
        gcp.projects.IAMMember(
            "app-predictor",
            project=config.project,
            role=predictor_role.name,
            member=account.member,
            opts=opts,
        )
    ]
    bindings.extend(
        gcp.projects.IAMMember(
            "app-" + re.sub(r"[^A-Za-z0-9]+", "-", role.removeprefix("roles/")),
            project=config.project,
            role=role,
            member=account.member,
            opts=opts,
        )
        for role in app_project_roles(config)
    )
    return Identity(account=account, predictor_role=predictor_role, bindings=bindings)
