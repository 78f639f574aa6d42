"""``manage.py predcache``: the operator CLI (models, keys, purge, reclaim, warm, warm sets, stats).

Each group of subcommands is a module of :mod:`caching.management.cli`; this command assembles
them, runs the one asked for, and turns the errors users can cause into its own error, worded
for an operator, with the exit status of :func:`caching.core.errors.exit_status`.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from caching.core.errors import PredcacheError, exit_status
from caching.management.cli import keys, models, purges, schedules, stats, warming

# In the order `predcache --help` lists them.
GROUPS = (models, keys, purges, warming, schedules, stats)


def operator_message(error: PredcacheError) -> str:
    """What the operator reads: the error's words (Redis's own words for an unavailable Redis)."""
    if error.code == "cache_unavailable":
        return f"Redis is unavailable: {error.message}"
    return error.message


class Command(BaseCommand):
    help = "Operate predcache: register models, create API keys, purge, warm and inspect caches."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="command", required=True)
        for group in GROUPS:
            group.add_to(commands)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            options["handler"](self, options)
        except PredcacheError as error:  # anything else is a bug: its traceback says where
            raise CommandError(operator_message(error), returncode=exit_status(error.code)) from error
