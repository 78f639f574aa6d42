"""``predcache keys create LABEL [--admin]``: the new key is the last line printed."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from caching.management.cli.common import Subparsers
from caching.services import api_key_create


def add_to(commands: Subparsers) -> None:
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key; the key is the last line printed")
    create.add_argument("label")
    create.add_argument(
        "--admin", action="store_true", help="the key may also call the management API (/v1/admin/)"
    )
    create.set_defaults(handler=keys_create)


def keys_create(command: BaseCommand, options: dict[str, Any]) -> None:
    label = options["label"]
    key = api_key_create(label=label, may_administer=options["admin"])
    # The key alone on stdout, last, for scripts (KEY=$(... keys create x)); the note on stderr.
    command.stderr.write(f"created API key {label!r}; store it now, it is not shown again (next line):")
    command.stdout.write(key)
