"""Stack config: every default documented in Pulumi.dev.yaml.example; malformed values refused up front."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from tests.infra.mocks import InfraStack

EXAMPLE = Path(__file__).resolve().parents[2] / "infra" / "Pulumi.dev.yaml.example"
# "  # predcache:key: value   # comment" -> key, value
EXAMPLE_LINE = re.compile(r"^\s*# predcache:(\w+): (.*?)(?:\s{2,}#.*)?$")


def _documented_defaults() -> dict[str, Any]:
    found = {}
    for line in EXAMPLE.read_text().splitlines():
        if match := EXAMPLE_LINE.match(line):
            found[match.group(1)] = yaml.safe_load(match.group(2))
    return found


def test_the_example_stack_file_documents_every_key_with_its_default() -> None:
    from predcache_infra import StackConfig

    defaults = StackConfig(project="p", region="r")
    expected = {}
    for item in dataclasses.fields(StackConfig):
        if item.name in ("project", "region", "stack"):
            continue
        head, *rest = item.name.split("_")
        value = getattr(defaults, item.name)
        key = head + "".join(part.title() for part in rest)
        expected[key] = list(value) if isinstance(value, tuple) else value
    assert _documented_defaults() == expected


@pytest.mark.parametrize(
    "config",
    [
        {"webMinInstances": "5", "webMaxInstances": "2"},
        {"redisReadReplicas": "2"},  # needs STANDARD_HA and >= 5 GB
        {"redisTier": "PREMIUM"},
        {"namePrefix": "Predcache"},
        {"appExtraRoles": "roles/run.invoker"},  # not a JSON list
    ],
)
def test_malformed_configs_are_refused(infra: InfraStack, config: dict[str, str]) -> None:
    from predcache_infra import ConfigError

    with pytest.raises(ConfigError):
        infra.build(**config)
    assert infra.mocks.resources == []


def test_project_and_region_are_required(infra: InfraStack) -> None:
    from predcache_infra import load_config

    pulumi.runtime.set_all_config({"gcp:region": "europe-west1"})
    with pytest.raises(pulumi.ConfigMissingError, match="gcp:project"):
        load_config()
