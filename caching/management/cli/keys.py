"""``predcache keys create | list | revoke``: API keys, their models, rate and expiry."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from caching.core.ratelimit import Rate
from caching.management import reports
from caching.management.cli.common import Subparsers, validation_message, when
from caching.selectors import api_keys_list
from caching.services import api_key_create, api_key_revoke

MAX_EXPIRES_DAYS = 36_500


def add_to(commands: Subparsers) -> None:
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key; the key is the last line printed")
    create.add_argument("label")
    create.add_argument(
        "--admin", action="store_true", help="the key may also call the management API (/v1/admin/)"
    )
    create.add_argument(
        "--models",
        type=_model_names,
        default=[],
        metavar="A,B",
        help="the registered models the key may use (others are a 403); default: every model",
    )
    create.add_argument(
        "--rate",
        type=_rate,
        metavar="N/s|N/m",
        help="at most N requests a second or a minute, all processes together (more is a 429)",
    )
    create.add_argument(
        "--expires-days", type=_days, metavar="D", help="the key stops working D days from now"
    )
    create.set_defaults(handler=keys_create)
    keys.add_parser("list", help="every key: its models, rate, expiry, state and last use").set_defaults(
        handler=keys_list
    )
    revoke = keys.add_parser("revoke", help="revoke a key (for good) by its prefix, the part before the dot")
    revoke.add_argument("prefix")
    revoke.set_defaults(handler=keys_revoke)


def keys_create(command: BaseCommand, options: dict[str, Any]) -> None:
    label = options["label"]
    try:
        key = api_key_create(
            label=label,
            may_administer=options["admin"],
            model_names=options["models"],
            rate=options["rate"],
            expires_days=options["expires_days"],
        )
    except ValidationError as exc:
        raise CommandError(validation_message(exc)) from exc
    # The key alone on stdout, last, for scripts (KEY=$(... keys create x)); the note on stderr.
    command.stderr.write(f"created API key {label!r}; store it now, it is not shown again (next line):")
    command.stdout.write(key)


def keys_list(command: BaseCommand, options: dict[str, Any]) -> None:
    now = timezone.now()
    rows = []
    for api_key in api_keys_list():
        grant = getattr(api_key, "grant", None)
        rate = grant.rate if grant is not None else None
        if api_key.revoked:
            state = "revoked"
        elif api_key.expiry_date is not None and api_key.expiry_date <= now:
            state = "expired"
        else:
            state = "active"
        rows.append(
            [
                api_key.prefix,
                api_key.name,
                state,
                ",".join(grant.model_names) if grant is not None and grant.model_names else "all",
                "-" if rate is None else str(rate),
                "yes" if grant is not None and grant.may_administer else "no",
                when(api_key.expiry_date),
                when(grant.last_used_at if grant is not None else None),
                when(api_key.created),
            ]
        )
    headers = ["PREFIX", "LABEL", "STATE", "MODELS", "RATE", "ADMIN", "EXPIRES", "LAST USED", "CREATED"]
    command.stdout.write(reports.table(headers, rows, right_aligned=()))


def keys_revoke(command: BaseCommand, options: dict[str, Any]) -> None:
    api_key, revoked = api_key_revoke(prefix=options["prefix"])
    if revoked:
        command.stdout.write(
            f"revoked API key {api_key.prefix} ({api_key.name!r}): refused at once here, and by every "
            "process within PREDCACHE_API_KEY_CACHE_SECONDS"
        )
    else:
        command.stdout.write(f"API key {api_key.prefix} ({api_key.name!r}) was revoked already")


def _model_names(text: str) -> list[str]:
    """argparse type of ``--models``: comma-separated model names."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one model (leave --models out for every model)")
    return names


def _rate(text: str) -> Rate:
    """argparse type of ``--rate``: ``N/s`` or ``N/m``."""
    try:
        return Rate.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _days(text: str) -> int:
    """argparse type of ``--expires-days``: a whole number of days, from 1 to a hundred years."""
    if not text.isdigit() or not 1 <= int(text) <= MAX_EXPIRES_DAYS:
        raise argparse.ArgumentTypeError(f"a whole number of days from 1 to {MAX_EXPIRES_DAYS}")
    return int(text)
