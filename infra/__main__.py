"""Pulumi entry point: read the stack config, build the stack (policy-checked first), export its outputs."""

import pulumi

from predcache_infra import build, load_config

deployment = build(load_config())
for name, value in deployment.exports().items():
    pulumi.export(name, value)
