"""The Vertex AI endpoint predcache fronts; infra/deploy_model.py deploys models to it (aiplatform SDK)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_random as random

from predcache_infra.config import StackConfig


@dataclass(frozen=True)
class VertexEndpoint:
    """The endpoint and its full resource name, `projects/P/locations/L/endpoints/E`."""

    endpoint: gcp.vertex.AiEndpoint
    endpoint_id: random.RandomInteger
    resource_name: pulumi.Output[str]


def create_vertex_endpoint(config: StackConfig, opts: pulumi.ResourceOptions) -> VertexEndpoint:
    """Create an empty endpoint (no model deployed yet) with a random numeric ID, as Vertex AI requires."""
    endpoint_id = random.RandomInteger("vertex-endpoint-id", min=1_000_000_000, max=9_999_999_999, opts=opts)
    endpoint = gcp.vertex.AiEndpoint(
        "vertex-endpoint",
        name=endpoint_id.result.apply(lambda value: str(int(value))),
        display_name=config.vertex_endpoint_display_name,
        description="Models served through predcache",
        location=config.region,
        region=config.region,
        labels=config.labels,
        opts=opts,
    )
    resource_name = pulumi.Output.concat(
        "projects/", config.project, "/locations/", config.region, "/endpoints/", endpoint.name
    )
    return VertexEndpoint(endpoint=endpoint, endpoint_id=endpoint_id, resource_name=resource_name)
