"""``predcache models upsert | list | show``: register models and their cache policies."""

from __future__ import annotations

import argparse
from typing import Any

import orjson
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from caching.backends import BACKENDS
from caching.core.canonical import InvalidJSON, parse_json
from caching.management import reports
from caching.management.cli.common import Subparsers, model_named, validation_message
from caching.models import CacheMode, ModelEndpoint
from caching.selectors import model_settings_describe
from caching.services import CLEAR, model_upsert


def add_to(commands: Subparsers) -> None:
    models = commands.add_parser("models", help="register and list models").add_subparsers(
        dest="models_command", required=True
    )
    upsert = models.add_parser(
        "upsert", help="create or update a model (idempotent; flags left out keep their value)"
    )
    upsert.set_defaults(handler=models_upsert)
    upsert.add_argument("name")
    upsert.add_argument("--backend", choices=list(BACKENDS), help="needed only for a new model")
    upsert.add_argument("--target", help="needed only for a new model")
    upsert.add_argument("--api-endpoint")
    upsert.add_argument("--ttl", type=int, help="seconds a prediction is served as fresh")
    upsert.add_argument("--jitter", type=float, help="fraction of the TTL entries expire early by, at random")
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
    upsert.add_argument("--admit-after", type=int, metavar="K", help="store after K requests of an instance")
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
    upsert.add_argument(
        "--l1",
        choices=["on", "off"],
        help="keep the model's recent entries in each web process's memory too (see README: L1)",
    )
    upsert.add_argument("--timeout", type=float, help="seconds one backend call may take")
    upsert.add_argument("--model-version", help="version text that is part of every cache key")
    upsert.add_argument(
        "--options",
        type=_json_object,
        help='backend options as a JSON object, e.g. \'{"method": "predict_proba"}\'',
    )
    upsert.add_argument("--cache", dest="mode", action="store_const", const="cache", help="= --mode cache")
    upsert.add_argument(
        "--no-cache", dest="mode", action="store_const", const="bypass", help="= --mode bypass"
    )
    models.add_parser("list", help="list registered models").set_defaults(handler=models_list)
    show = models.add_parser("show", help="a model's settings and its whole cache policy")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(handler=models_show)


def models_upsert(command: BaseCommand, options: dict[str, Any]) -> None:
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
            l1=None if options["l1"] is None else options["l1"] == "on",
            **(options["round"] or {}),
        )
    except ValidationError as exc:
        raise CommandError(validation_message(exc)) from exc
    command.stdout.write(f"{'created' if created else 'updated'} model {model.name}")


def models_list(command: BaseCommand, options: dict[str, Any]) -> None:
    for model in ModelEndpoint.objects.select_related("policy"):
        policy = getattr(model, "policy", None)
        mode = policy.mode if policy is not None else "cache"
        ttl = policy.ttl_seconds if policy is not None else "-"
        command.stdout.write(
            f"{model.name}\t{model.backend}\t{model.target}\tttl={ttl}\tmode={mode}"
            f"\tversion={model.model_version or '-'}"
        )


def models_show(command: BaseCommand, options: dict[str, Any]) -> None:
    described = model_settings_describe(model=model_named(options["name"]))
    if options["json"]:
        command.stdout.write(orjson.dumps(described).decode())
    else:
        command.stdout.write(reports.model_detail(described))


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
