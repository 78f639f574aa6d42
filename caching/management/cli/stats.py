"""``predcache stats [NAME] [--json]``: requests, hits and what the cache saved."""

from __future__ import annotations

from typing import Any

import orjson
from django.core.management.base import BaseCommand

from caching.management import reports
from caching.management.cli.common import Subparsers, model_named
from caching.models import ModelEndpoint
from caching.selectors import model_stats


def add_to(commands: Subparsers) -> None:
    stats = commands.add_parser(
        "stats", help="requests, hits and what the cache saved: a table of models, or one model in full"
    )
    stats.add_argument("name", nargs="?")
    stats.add_argument("--json", action="store_true", help="one JSON object per model, one per line")
    stats.set_defaults(handler=stats_show)


def stats_show(command: BaseCommand, options: dict[str, Any]) -> None:
    name = options["name"]
    models = [model_named(name)] if name else list(ModelEndpoint.objects.all())
    all_stats = [model_stats(model=model) for model in models]
    if options["json"]:
        for stats in all_stats:
            command.stdout.write(orjson.dumps(stats).decode())
    elif name:
        command.stdout.write(reports.stats_detail(all_stats[0]))
    elif all_stats:
        command.stdout.write(reports.stats_summary(all_stats))
    else:
        command.stdout.write("no models are registered (predcache models upsert NAME ...)")
