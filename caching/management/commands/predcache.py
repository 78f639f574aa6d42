"""``manage.py predcache``: the operator CLI (models, keys, purge, reclaim, warm, stats)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from caching.backends import BACKENDS
from caching.backends.base import BackendError
from caching.core.canonical import InvalidJSON, parse_json
from caching.core.store import CacheUnavailable
from caching.management import reports
from caching.models import CacheMode, ModelEndpoint
from caching.selectors import model_settings_describe, model_stats, schedules_list
from caching.services import (
    CLEAR,
    PurgeRefused,
    api_key_create,
    model_cache_purge,
    model_cache_reclaim,
    model_instances_purge,
    model_upsert,
    prediction_serve,
)
from caching.services.schedules import schedules_install

WARM_BATCH = 100


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

        warm = commands.add_parser("warm", help="compute and store predictions for known instances")
        warm.add_argument("name")
        warm.add_argument("--file", required=True, type=Path, help="JSON Lines, one instance a line")
        warm.add_argument("--parameters", help="JSON object of parameters sent with every instance")

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
            "warm": lambda: self._warm(options["name"], options["file"], options["parameters"]),
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
        instances = list(_read_instances(path))
        if not instances:
            raise CommandError(f"{path}: no instances")
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

    def _warm(self, name: str, path: Path, parameters_json: str | None) -> None:
        _model_named(name)
        parameters = _parse_parameters(parameters_json)
        totals = {"instances": 0, "already_cached": 0, "computed": 0}
        try:
            for batch in _batches(_read_instances(path), WARM_BATCH):
                _, result = prediction_serve(model_name=name, instances=batch, parameters=parameters)
                totals["instances"] += len(batch)
                totals["already_cached"] += result.hits
                totals["computed"] += result.misses
        except (BackendError, InvalidJSON) as exc:
            raise CommandError(f"warming stopped after {totals['instances']} instances: {exc}") from exc
        self.stdout.write(" ".join(f"{key}={value}" for key, value in totals.items()))

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


def _read_instances(path: Path) -> Iterator[Any]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc}") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield parse_json(line)
            except InvalidJSON as exc:
                raise CommandError(f"{path}:{number}: {exc}") from exc


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _validation_message(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
    return " ".join(exc.messages)
