"""``predcache schedules install | list``: the periodic tasks celery beat runs, kept in the database."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from caching.management import reports
from caching.management.cli.common import Subparsers, when
from caching.selectors import schedules_list
from caching.services.schedules import schedules_install


def add_to(commands: Subparsers) -> None:
    schedules = commands.add_parser(
        "schedules", help="the periodic tasks celery beat runs (kept in the database)"
    ).add_subparsers(dest="schedules_command", required=True)
    schedules.add_parser(
        "install",
        help="make every schedule match the models and warm sets, with the defaults (idempotent)",
    ).set_defaults(handler=schedules_install_all)
    schedules.add_parser(
        "list", help="the periodic tasks predcache keeps, with their schedule and last run"
    ).set_defaults(handler=schedules_show)


def schedules_install_all(command: BaseCommand, options: dict[str, Any]) -> None:
    changes = schedules_install()
    for change in changes:
        command.stdout.write(change)
    command.stdout.write(f"schedules installed ({len(changes)} changed)")


def schedules_show(command: BaseCommand, options: dict[str, Any]) -> None:
    rows = [
        [
            task.name,
            task.task,
            str(task.crontab or task.interval),
            when(task.last_run_at),
            "yes" if task.enabled else "no",
        ]
        for task in schedules_list()
    ]
    if rows:
        headers = ["NAME", "TASK", "SCHEDULE", "LAST RUN", "ENABLED"]
        command.stdout.write(reports.table(headers, rows, right_aligned=()))
    else:
        command.stdout.write("no schedules (predcache schedules install)")
