"""``predcache purge NAME [--version V | --instances FILE]`` and ``predcache reclaim [NAME]``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from caching.core.canonical import InvalidJSON
from caching.management.cli.common import Subparsers, model_named, parse_parameters, warm_file
from caching.models import ModelEndpoint
from caching.services import model_cache_purge, model_cache_reclaim, model_instances_purge


def add_to(commands: Subparsers) -> None:
    purge = commands.add_parser("purge", help="make a model's cached predictions unreachable")
    purge.add_argument("name")
    what = purge.add_mutually_exclusive_group()
    what.add_argument("--version", help="purge only this model version")
    what.add_argument(
        "--instances", type=Path, metavar="FILE", help="purge only these: JSON Lines, one instance a line"
    )
    purge.add_argument("--parameters", help="with --instances: the JSON object they were asked with")
    purge.add_argument(
        "--no-reclaim",
        action="store_true",
        help="return at once; purged entries then free their memory at their TTL (or `reclaim`)",
    )
    purge.set_defaults(handler=purge_model)

    reclaim = commands.add_parser("reclaim", help="free the memory of purged entries now")
    reclaim.add_argument("name", nargs="?")
    reclaim.set_defaults(handler=lambda command, options: reclaim_models(command, options["name"]))


def purge_model(command: BaseCommand, options: dict[str, Any]) -> None:
    model = model_named(options["name"])
    path = options["instances"]
    if path is None:
        if options["parameters"] is not None:
            raise CommandError("--parameters goes with --instances")
        outcome = model_cache_purge(
            model=model, model_version=options["version"], requested_by="cli", reclaim=False
        )
        command.stdout.write(outcome.message)
        if outcome.record is not None and not options["no_reclaim"]:
            reclaim_models(command, model.name)
        return
    instances = warm_file(path)  # as a warm reads it: JSONL or CSV, every bad line named
    parameters = parse_parameters(options["parameters"])
    try:
        outcome = model_instances_purge(
            model=model, instances=instances, parameters=parameters, requested_by="cli"
        )
    except InvalidJSON as exc:
        raise CommandError(f"{path}: {exc}") from exc
    command.stdout.write(outcome.message)


def reclaim_models(command: BaseCommand, name: str | None) -> None:
    models = [model_named(name)] if name else list(ModelEndpoint.objects.all())
    for model in models:
        freed = model_cache_reclaim(model=model)
        command.stdout.write(f"freed {freed} unreachable cached prediction(s) of {model.name}")
