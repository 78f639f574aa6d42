"""The VPC: a subnet for Cloud Run's Direct VPC egress; private services access for Memorystore, Cloud SQL."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from predcache_infra.config import StackConfig


@dataclass(frozen=True)
class Network:
    """The VPC, its subnet and the peering that gives Memorystore and Cloud SQL private addresses in it."""

    vpc: gcp.compute.Network
    subnet: gcp.compute.Subnetwork
    private_services_range: gcp.compute.GlobalAddress
    private_services: gcp.servicenetworking.Connection


def create_network(config: StackConfig, opts: pulumi.ResourceOptions) -> Network:
    """Create the VPC, the subnet and private services access."""
    vpc = gcp.compute.Network(
        "vpc",
        name=config.name("vpc"),
        auto_create_subnetworks=False,
        routing_mode="REGIONAL",
        opts=opts,
    )
    subnet = gcp.compute.Subnetwork(
        "subnet",
        name=config.name("subnet"),
        region=config.region,
        network=vpc.id,
        ip_cidr_range=config.subnet_cidr,
        private_ip_google_access=True,
        opts=opts,
    )
    private_services_range = gcp.compute.GlobalAddress(
        "private-services-range",
        name=config.name("private-services"),
        purpose="VPC_PEERING",
        address_type="INTERNAL",
        prefix_length=config.private_services_prefix_length,
        network=vpc.id,
        opts=opts,
    )
    private_services = gcp.servicenetworking.Connection(
        "private-services",
        network=vpc.id,
        service="servicenetworking.googleapis.com",
        reserved_peering_ranges=[private_services_range.name],
        # Deleting the peering fails while Google still holds addresses in it; leave it to the VPC's deletion.
        deletion_policy="ABANDON",
        opts=opts,
    )
    return Network(
        vpc=vpc,
        subnet=subnet,
        private_services_range=private_services_range,
        private_services=private_services,
    )
