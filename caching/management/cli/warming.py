"""``predcache warm NAME --file F [--async]`` and ``predcache warmset add | list``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, OutputWrapper
from tqdm import tqdm

from caching.core.errors import exit_status
from caching.management import reports
from caching.management.cli.common import (
    WARM_FILE_HELP,
    Subparsers,
    model_named,
    parse_parameters,
    validation_message,
    warm_file,
    when,
)
from caching.models import ModelEndpoint, WarmRun, WarmRunStatus
from caching.selectors import warm_sets_list
from caching.services.warm_sets import warm_set_upsert
from caching.services.warming import (
    WarmBusy,
    warm_instances_enqueue,
    warm_run_create,
    warm_run_execute,
)


def add_to(commands: Subparsers) -> None:
    warm = commands.add_parser(
        "warm", help="compute and store the predictions of instances that are missing or close to expiry"
    )
    warm.add_argument("name")
    warm.add_argument("--file", required=True, type=Path, help=WARM_FILE_HELP)
    warm.add_argument("--parameters", help="JSON object of parameters sent with every instance")
    warm.add_argument(
        "--async",
        dest="queued",
        action="store_true",
        help="queue it on a Celery worker instead; the task id is the last line printed",
    )
    warm.set_defaults(handler=warm_model)

    warmset = commands.add_parser(
        "warmset", help="named sets of instances a model is warmed with, on a schedule or on demand"
    ).add_subparsers(dest="warmset_command", required=True)
    add = warmset.add_parser(
        "add", help="create a warm set, or replace its instances (a schedule left out is kept)"
    )
    add.add_argument("name", help="the model")
    add.add_argument("set", help="the set's name: letters, digits, '-' and '_'")
    add.add_argument("--file", required=True, type=Path, help=WARM_FILE_HELP)
    add.add_argument("--parameters", help="JSON object of parameters sent with every instance")
    schedule = add.add_mutually_exclusive_group()
    schedule.add_argument(
        "--every",
        type=_every,
        metavar="SECONDS",
        help="warm it every SECONDS (at least 10; 'off': never)",
    )
    schedule.add_argument(
        "--cron", metavar='"M H DoM Mon DoW"', help="warm it on this cron schedule (UTC; 'off': never)"
    )
    add.set_defaults(handler=warm_set_add)
    listed = warmset.add_parser("list", help="warm sets with their schedule and last run")
    listed.add_argument("name", nargs="?", help="only this model's")
    listed.set_defaults(handler=warm_sets_show)


def warm_model(command: BaseCommand, options: dict[str, Any]) -> None:
    model = model_named(options["name"])
    path: Path = options["file"]
    instances = warm_file(path)
    parameters = parse_parameters(options["parameters"])
    if options["queued"]:
        _warm_queued(command, model, path, instances, parameters)
        return
    run = warm_run_create(model=model, source=f"file {path.name}", requested_by="cli", total=len(instances))
    started = time.monotonic()
    with tqdm(
        total=len(instances), desc=f"warming {model.name}", unit=" instances", file=_Unended(command.stderr)
    ) as bar:

        def progress(run: WarmRun) -> None:
            bar.total = run.total
            bar.set_postfix(
                computed=run.computed, cached=run.already_cached, errors=run.errors, refresh=False
            )
            bar.update(run.done - bar.n)

        try:
            run = warm_run_execute(run=run, instances=instances, parameters=parameters, on_progress=progress)
        except WarmBusy as exc:
            raise CommandError(
                f"{exc}: try again when it ends (its progress is on the model's admin page)",
                returncode=exit_status(exc.code),
            ) from exc
    seconds = time.monotonic() - started
    summary = (
        f"warm run {run.pk} of {model.name} {run.status} in {seconds:.1f} s: instances={run.total} "
        f"computed={run.computed} already_cached={run.already_cached} errors={run.errors}"
    )
    if run.status == WarmRunStatus.FAILED:
        raise CommandError(f"{summary}: {run.message}")
    command.stdout.write(summary)
    if run.message:
        command.stderr.write(run.message)


def _warm_queued(
    command: BaseCommand,
    model: ModelEndpoint,
    path: Path,
    instances: list[Any],
    parameters: dict[str, Any] | None,
) -> None:
    if not settings.PREDCACHE_BACKGROUND_IN_WORKERS:
        raise CommandError(
            "--async needs a Celery worker, and PREDCACHE_BACKGROUND_IN_WORKERS is off: "
            "warm in the foreground"
        )
    run = warm_instances_enqueue(  # WarmNotQueued: the command says so, exiting EX_TEMPFAIL
        model=model,
        instances=instances,
        parameters=parameters,
        requested_by="cli",
        source=f"file {path.name}",
    )
    # The task id alone on stdout, last, for scripts; what it is on stderr.
    command.stderr.write(
        f"queued warm run {run.pk} of {model.name} ({run.total} instances); "
        "its progress is on the model's admin page. Task id (next line):"
    )
    command.stdout.write(run.task_id)


def warm_set_add(command: BaseCommand, options: dict[str, Any]) -> None:
    model = model_named(options["name"])
    instances = warm_file(options["file"])
    every, cron = options["every"], options["cron"]
    schedule: dict[str, Any] = {}
    if every is not None:
        schedule = {"every_seconds": None if every == "off" else every, "cron": ""}
    elif cron is not None:
        schedule = {"every_seconds": None, "cron": "" if cron == "off" else cron}
    try:
        warm_set, created = warm_set_upsert(
            model=model,
            name=options["set"],
            instances=instances,
            parameters=parse_parameters(options["parameters"]),
            **schedule,
        )
    except ValidationError as exc:
        raise CommandError(validation_message(exc)) from exc
    command.stdout.write(
        f"{'created' if created else 'replaced'} warm set {warm_set.name} of {model.name}: "
        f"{warm_set.instance_count} instances, {_warm_schedule(warm_set.every_seconds, warm_set.cron)}"
    )


def warm_sets_show(command: BaseCommand, options: dict[str, Any]) -> None:
    name = options["name"]
    rows = []
    for warm_set, run in warm_sets_list(model=model_named(name) if name else None):
        rows.append(
            [
                warm_set.model.name,
                warm_set.name,
                f"{warm_set.instance_count:,}",
                _warm_schedule(warm_set.every_seconds, warm_set.cron),
                "-" if run is None else when(run.queued_at),
                "-" if run is None else run.status,
                "-" if run is None else f"{run.done:,}/{run.total:,}",
                "-" if run is None else f"{run.computed:,}",
                "-" if run is None else f"{run.already_cached:,}",
                "-" if run is None else f"{run.errors:,}",
            ]
        )
    if not rows:
        command.stdout.write("no warm sets (predcache warmset add NAME SET --file F)")
        return
    headers = [
        "MODEL",
        "SET",
        "INSTANCES",
        "SCHEDULE",
        "LAST RUN",
        "STATUS",
        "DONE",
        "COMPUTED",
        "CACHED",
        "ERRORS",
    ]
    command.stdout.write(reports.table(headers, rows, right_aligned=(2, 6, 7, 8, 9)))


class _Unended:
    """The command's stderr as tqdm writes to it: Django's wrapper would end each redraw with a newline."""

    def __init__(self, output: OutputWrapper) -> None:
        self.output = output

    def write(self, text: str) -> None:
        self.output.write(text, ending="")

    def flush(self) -> None:
        self.output.flush()


def _warm_schedule(every_seconds: int | None, cron: str) -> str:
    if every_seconds:
        return f"every {every_seconds} s"
    return f"cron {cron}" if cron else "on demand"


def _every(text: str) -> int | str:
    """argparse type of ``--every``: whole seconds, or ``off``."""
    if text == "off":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError("whole seconds (at least 10), or off")
    return int(text)
