"""Artifact Registry: the Docker repository the predcache image is pushed to."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from predcache_infra.config import StackConfig


def create_registry(config: StackConfig, opts: pulumi.ResourceOptions) -> gcp.artifactregistry.Repository:
    """Create the Docker repository `<region>-docker.pkg.dev/<project>/<repository_id>`."""
    return gcp.artifactregistry.Repository(
        "images",
        repository_id=config.repository_id,
        location=config.region,
        format="DOCKER",
        description="predcache container images",
        labels=config.labels,
        opts=opts,
    )
