"""``manage.py predcache``: the operator CLI (models, keys, purge, reclaim, warm, warm sets, stats)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from tqdm import tqdm

from caching.backends import BACKENDS
from caching.core.canonical import InvalidJSON, parse_json
from caching.core.store import CacheUnavailable
from caching.management import reports
from caching.models import CacheMode, ModelEndpoint, WarmRun, WarmRunStatus
from caching.selectors import model_settings_describe, model_stats, schedules_list, warm_sets_list
from caching.services import (
    CLEAR,
    PurgeRefused,
    api_key_create,
    model_cache_purge,
    model_cache_reclaim,
    model_instances_purge,
    model_upsert,
)
from caching.services.schedules import schedules_install
from caching.services.warm_sets import FILE_MAX_BYTES, WarmFileInvalid, warm_file_parse, warm_set_upsert
from caching.services.warming import (
    WarmBusy,
    WarmNotQueued,
    warm_instances_enqueue,
    warm_run_create,
    warm_run_execute,
)

WARM_FILE_HELP = "JSON Lines (one instance a line), or CSV with a header row when it ends in .csv"


class Command(BaseCommand):
    help = "Operate predcache: register models, create API keys, purge, warm and inspect caches."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="command", required=True)

        models = commands.add_parser("models", help="register and list models").add_subparsers(
            dest="models_command", required=True
        )
        upsert = models.add_parser(
            "upsert", help="create or update a model (idempotent; flags left out keep their value)"
        )
        upsert.add_argument("name")
        upsert.add_argument("--backend", choices=list(BACKENDS), help="needed only for a new model")
        upsert.add_argument("--target", help="needed only for a new model")
        upsert.add_argument("--api-endpoint")
        upsert.add_argument("--ttl", type=int, help="seconds a prediction is served as fresh")
        upsert.add_argument(
            "--jitter", type=float, help="fraction of the TTL entries expire early by, at random"
        )
        upsert.add_argument(
            "--stale-while-revalidate",
            type=int,
            metavar="SECONDS",
            help="serve expired entries while refreshing",
        )
        upsert.add_argument(
            "--stale-if-error", type=int, metavar="SECONDS", help="serve expired entries when the model fails"
        )
        upsert.add_argument("--mode", choices=[mode.value for mode in CacheMode])
        upsert.add_argument(
            "--round",
            type=_rounding,
            metavar="N|Nsig|off",
            help="key numbers rounded to N decimals (or N significant digits)",
        )
        upsert.add_argument(
            "--ignore-field",
            action="append",
            metavar="FIELD",
            help="object field left out of the key (repeatable; dotted names reach nested fields)",
        )
        upsert.add_argument(
            "--admit-after", type=int, metavar="K", help="store after K requests of an instance"
        )
        upsert.add_argument("--max-entry-bytes", type=int, help="larger predictions are not stored")
        upsert.add_argument(
            "--purge-cron",
            metavar='"M H DoM Mon DoW"',
            help="purge the whole model on this cron schedule (UTC; run by celery beat); '' for none",
        )
        upsert.add_argument(
            "--warm-rate",
            type=_warm_rate,
            metavar="INSTANCES_PER_SECOND",
            help="warming sends the model at most this many instances a second ('off': unthrottled)",
        )
        upsert.add_argument("--warm-batch-size", type=int, metavar="N", help="instances per warming call")
        upsert.add_argument(
            "--refresh-ahead",
            type=int,
            metavar="SECONDS",
            help="recompute popular entries that expire within this window before they do (0: off)",
        )
        upsert.add_argument("--timeout", type=float, help="seconds one backend call may take")
        upsert.add_argument("--model-version", help="version text that is part of every cache key")
        upsert.add_argument(
            "--options",
            type=_json_object,
            help='backend options as a JSON object, e.g. \'{"method": "predict_proba"}\'',
        )
        upsert.add_argument(
            "--cache", dest="mode", action="store_const", const="cache", help="= --mode cache"
        )
        upsert.add_argument(
            "--no-cache", dest="mode", action="store_const", const="bypass", help="= --mode bypass"
        )
        models.add_parser("list", help="list registered models")
        show = models.add_parser("show", help="a model's settings and its whole cache policy")
        show.add_argument("name")
        show.add_argument("--json", action="store_true", help="one JSON object")

        keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
            dest="keys_command", required=True
        )
        create = keys.add_parser("create", help="create a key; the key is the last line printed")
        create.add_argument("label")
        create.add_argument(
            "--admin", action="store_true", help="the key may also call the management API (/v1/admin/)"
        )

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

        reclaim = commands.add_parser("reclaim", help="free the memory of purged entries now")
        reclaim.add_argument("name", nargs="?")

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
        listed = warmset.add_parser("list", help="warm sets with their schedule and last run")
        listed.add_argument("name", nargs="?", help="only this model's")

        schedules = commands.add_parser(
            "schedules", help="the periodic tasks celery beat runs (kept in the database)"
        ).add_subparsers(dest="schedules_command", required=True)
        schedules.add_parser(
            "install",
            help="make every schedule match the models and warm sets, with the defaults (idempotent)",
        )
        schedules.add_parser(
            "list", help="the periodic tasks predcache keeps, with their schedule and last run"
        )

        stats = commands.add_parser(
            "stats", help="requests, hits and what the cache saved: a table of models, or one model in full"
        )
        stats.add_argument("name", nargs="?")
        stats.add_argument("--json", action="store_true", help="one JSON object per model, one per line")

    def handle(self, *args: Any, **options: Any) -> None:
        command = options["command"]
        handler = {
            "models": lambda: self._models(options),
            "keys": lambda: self._keys_create(options["label"], options["admin"]),
            "purge": lambda: self._purge(options),
            "reclaim": lambda: self._reclaim(options["name"]),
            "warm": lambda: self._warm(options),
            "warmset": lambda: self._warmset(options),
            "stats": lambda: self._stats(options["name"], options["json"]),
            "schedules": lambda: self._schedules(options["schedules_command"]),
        }[command]
        try:
            handler()
        except CacheUnavailable as exc:
            raise CommandError(f"Redis is unavailable: {exc}") from exc

    def _models(self, options: dict[str, Any]) -> None:
        if options["models_command"] == "show":
            described = model_settings_describe(model=_model_named(options["name"]))
            if options["json"]:
                self.stdout.write(orjson.dumps(described).decode())
            else:
                self.stdout.write(reports.model_detail(described))
            return
        if options["models_command"] == "list":
            for model in ModelEndpoint.objects.select_related("policy"):
                policy = getattr(model, "policy", None)
                mode = policy.mode if policy is not None else "cache"
                ttl = policy.ttl_seconds if policy is not None else "-"
                self.stdout.write(
                    f"{model.name}\t{model.backend}\t{model.target}\tttl={ttl}\tmode={mode}"
                    f"\tversion={model.model_version or '-'}"
                )
            return
        try:
            model, created = model_upsert(
                name=options["name"],
                backend=options["backend"],
                target=options["target"],
                api_endpoint=options["api_endpoint"],
                timeout_seconds=options["timeout"],
                model_version=options["model_version"],
                options=options["options"],
                ttl_seconds=options["ttl"],
                ttl_jitter=options["jitter"],
                stale_while_revalidate_seconds=options["stale_while_revalidate"],
                stale_if_error_seconds=options["stale_if_error"],
                mode=options["mode"],
                ignore_fields=options["ignore_field"],
                admit_after=options["admit_after"],
                max_entry_bytes=options["max_entry_bytes"],
                purge_schedule=options["purge_cron"],
                warm_rate=options["warm_rate"],
                warm_batch_size=options["warm_batch_size"],
                refresh_ahead_seconds=options["refresh_ahead"],
                **(options["round"] or {}),
            )
        except ValidationError as exc:
            raise CommandError(_validation_message(exc)) from exc
        self.stdout.write(f"{'created' if created else 'updated'} model {model.name}")

    def _keys_create(self, label: str, may_administer: bool) -> None:
        key = api_key_create(label=label, may_administer=may_administer)
        # The key alone on stdout, last, for scripts (KEY=$(... keys create x)); the note on stderr.
        self.stderr.write(f"created API key {label!r}; store it now, it is not shown again (next line):")
        self.stdout.write(key)

    def _purge(self, options: dict[str, Any]) -> None:
        model = _model_named(options["name"])
        path = options["instances"]
        if path is None:
            if options["parameters"] is not None:
                raise CommandError("--parameters goes with --instances")
            try:
                outcome = model_cache_purge(
                    model=model, model_version=options["version"], requested_by="cli", reclaim=False
                )
            except PurgeRefused as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(outcome.message)
            if outcome.record is not None and not options["no_reclaim"]:
                self._reclaim(model.name)
            return
        instances = _warm_file(path)  # as a warm reads it: JSONL or CSV, every bad line named
        parameters = _parse_parameters(options["parameters"])
        try:
            outcome = model_instances_purge(
                model=model, instances=instances, parameters=parameters, requested_by="cli"
            )
        except InvalidJSON as exc:
            raise CommandError(f"{path}: {exc}") from exc
        self.stdout.write(outcome.message)

    def _reclaim(self, name: str | None) -> None:
        models = [_model_named(name)] if name else list(ModelEndpoint.objects.all())
        for model in models:
            freed = model_cache_reclaim(model=model)
            self.stdout.write(f"freed {freed} unreachable cached prediction(s) of {model.name}")

    def _warm(self, options: dict[str, Any]) -> None:
        model = _model_named(options["name"])
        path: Path = options["file"]
        instances = _warm_file(path)
        parameters = _parse_parameters(options["parameters"])
        if options["queued"]:
            self._warm_queued(model, path, instances, parameters)
            return
        run = warm_run_create(
            model=model, source=f"file {path.name}", requested_by="cli", total=len(instances)
        )
        started = time.monotonic()
        with tqdm(
            total=len(instances), desc=f"warming {model.name}", unit=" instances", file=_Unended(self.stderr)
        ) as bar:

            def progress(run: WarmRun) -> None:
                bar.total = run.total
                bar.set_postfix(
                    computed=run.computed, cached=run.already_cached, errors=run.errors, refresh=False
                )
                bar.update(run.done - bar.n)

            try:
                run = warm_run_execute(
                    run=run, instances=instances, parameters=parameters, on_progress=progress
                )
            except WarmBusy as exc:
                raise CommandError(
                    f"{exc}: try again when it ends (its progress is on the model's admin page)"
                ) from exc
        seconds = time.monotonic() - started
        summary = (
            f"warm run {run.pk} of {model.name} {run.status} in {seconds:.1f} s: instances={run.total} "
            f"computed={run.computed} already_cached={run.already_cached} errors={run.errors}"
        )
        if run.status == WarmRunStatus.FAILED:
            raise CommandError(f"{summary}: {run.message}")
        self.stdout.write(summary)
        if run.message:
            self.stderr.write(run.message)

    def _warm_queued(
        self, model: ModelEndpoint, path: Path, instances: list[Any], parameters: dict[str, Any] | None
    ) -> None:
        if not settings.PREDCACHE_BACKGROUND_IN_WORKERS:
            raise CommandError(
                "--async needs a Celery worker, and PREDCACHE_BACKGROUND_IN_WORKERS is off: "
                "warm in the foreground"
            )
        try:
            run = warm_instances_enqueue(
                model=model,
                instances=instances,
                parameters=parameters,
                requested_by="cli",
                source=f"file {path.name}",
            )
        except WarmNotQueued as exc:
            raise CommandError(str(exc)) from exc
        # The task id alone on stdout, last, for scripts; what it is on stderr.
        self.stderr.write(
            f"queued warm run {run.pk} of {model.name} ({run.total} instances); "
            "its progress is on the model's admin page. Task id (next line):"
        )
        self.stdout.write(run.task_id)

    def _warmset(self, options: dict[str, Any]) -> None:
        if options["warmset_command"] == "list":
            self._warmset_list(options["name"])
            return
        model = _model_named(options["name"])
        instances = _warm_file(options["file"])
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
                parameters=_parse_parameters(options["parameters"]),
                **schedule,
            )
        except ValidationError as exc:
            raise CommandError(_validation_message(exc)) from exc
        self.stdout.write(
            f"{'created' if created else 'replaced'} warm set {warm_set.name} of {model.name}: "
            f"{warm_set.instance_count} instances, {_warm_schedule(warm_set.every_seconds, warm_set.cron)}"
        )

    def _warmset_list(self, name: str | None) -> None:
        rows = []
        for warm_set, run in warm_sets_list(model=_model_named(name) if name else None):
            rows.append(
                [
                    warm_set.model.name,
                    warm_set.name,
                    f"{warm_set.instance_count:,}",
                    _warm_schedule(warm_set.every_seconds, warm_set.cron),
                    "-" if run is None else _when(run.queued_at),
                    "-" if run is None else run.status,
                    "-" if run is None else f"{run.done:,}/{run.total:,}",
                    "-" if run is None else f"{run.computed:,}",
                    "-" if run is None else f"{run.already_cached:,}",
                    "-" if run is None else f"{run.errors:,}",
                ]
            )
        if not rows:
            self.stdout.write("no warm sets (predcache warmset add NAME SET --file F)")
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
        self.stdout.write(reports.table(headers, rows, right_aligned=(2, 6, 7, 8, 9)))

    def _schedules(self, command: str) -> None:
        if command == "install":
            changes = schedules_install()
            for change in changes:
                self.stdout.write(change)
            self.stdout.write(f"schedules installed ({len(changes)} changed)")
            return
        rows = [
            [
                task.name,
                task.task,
                str(task.crontab or task.interval),
                _when(task.last_run_at),
                "yes" if task.enabled else "no",
            ]
            for task in schedules_list()
        ]
        if rows:
            headers = ["NAME", "TASK", "SCHEDULE", "LAST RUN", "ENABLED"]
            self.stdout.write(reports.table(headers, rows, right_aligned=()))
        else:
            self.stdout.write("no schedules (predcache schedules install)")

    def _stats(self, name: str | None, as_json: bool) -> None:
        models = [_model_named(name)] if name else list(ModelEndpoint.objects.all())
        all_stats = [model_stats(model=model) for model in models]
        if as_json:
            for stats in all_stats:
                self.stdout.write(orjson.dumps(stats).decode())
        elif name:
            self.stdout.write(reports.stats_detail(all_stats[0]))
        elif all_stats:
            self.stdout.write(reports.stats_summary(all_stats))
        else:
            self.stdout.write("no models are registered (predcache models upsert NAME ...)")


def _when(moment: Any) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _model_named(name: str) -> ModelEndpoint:
    model = ModelEndpoint.objects.filter(name=name).first()
    if model is None:
        raise CommandError(f"no model is registered as {name!r}")
    return model


def _rounding(text: str) -> dict[str, Any]:
    """argparse type of ``--round``: ``3`` (decimals), ``3sig`` (significant digits) or ``off``."""
    if text == "off":
        return {"round_decimals": CLEAR, "round_significant": CLEAR}
    digits, significant = (text[:-3], True) if text.endswith("sig") else (text, False)
    if not digits.isdigit():
        raise argparse.ArgumentTypeError("use N (decimal places), Nsig (significant digits) or off")
    if significant:
        return {"round_decimals": CLEAR, "round_significant": int(digits)}
    return {"round_decimals": int(digits), "round_significant": CLEAR}


def _warm_rate(text: str) -> Any:
    """argparse type of ``--warm-rate``: a positive number of instances a second, or ``off``."""
    if text == "off":
        return CLEAR
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("a whole number of instances a second (at least 1), or off")
    return int(text)


def _json_object(text: str) -> dict[str, Any]:
    """argparse type of ``--options``: a JSON object."""
    try:
        value = parse_json(text.encode())
    except InvalidJSON as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _parse_parameters(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        parameters = parse_json(text.encode())
    except InvalidJSON as exc:
        raise CommandError(f"--parameters: {exc}") from exc
    if not isinstance(parameters, dict):
        raise CommandError("--parameters must be a JSON object")
    return parameters


class _Unended:
    """The command's stderr as tqdm writes to it: Django's wrapper would end each redraw with a newline."""

    def __init__(self, output: OutputWrapper) -> None:
        self.output = output

    def write(self, text: str) -> None:
        self.output.write(text, ending="")

    def flush(self) -> None:
        self.output.flush()


def _warm_file(path: Path) -> list[Any]:
    """The instances of a warm file; every bad line is reported, with its number."""
    try:
        if path.stat().st_size > FILE_MAX_BYTES:  # refused before it is read into memory
            raise CommandError(f"{path}: larger than {FILE_MAX_BYTES // 2**20} MiB: split the file")
        data = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc}") from exc
    try:
        return warm_file_parse(data=data, name=str(path))
    except WarmFileInvalid as exc:
        raise CommandError(str(exc)) from exc


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


def _validation_message(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
    return " ".join(exc.messages)
