"""What the subcommands share: finding a model, reading --parameters and warm files, wording errors."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from caching.core.canonical import InvalidJSON, parse_json
from caching.models import ModelEndpoint
from caching.services import ModelNotFound
from caching.services.warm_sets import FILE_MAX_BYTES, warm_file_parse

WARM_FILE_HELP = "JSON Lines (one instance a line), or CSV with a header row when it ends in .csv"

# A subcommand's handler: the command (for its stdout and stderr) and the parsed options.
Handler = Callable[[BaseCommand, dict[str, Any]], None]
Subparsers = argparse._SubParsersAction  # what add_subparsers() returns


def model_named(name: str) -> ModelEndpoint:
    """The model registered as ``name``; ModelNotFound otherwise."""
    model = ModelEndpoint.objects.filter(name=name).first()
    if model is None:
        raise ModelNotFound.named(name)
    return model


def parse_parameters(text: str | None) -> dict[str, Any] | None:
    """The JSON object given as ``--parameters``, if any."""
    if text is None:
        return None
    try:
        parameters = parse_json(text.encode())
    except InvalidJSON as exc:
        raise CommandError(f"--parameters: {exc}") from exc
    if not isinstance(parameters, dict):
        raise CommandError("--parameters must be a JSON object")
    return parameters


def warm_file(path: Path) -> list[Any]:
    """The instances of a warm file (JSONL or CSV); WarmFileInvalid names every bad line."""
    try:
        if path.stat().st_size > FILE_MAX_BYTES:  # refused before it is read into memory
            raise CommandError(f"{path}: larger than {FILE_MAX_BYTES // 2**20} MiB: split the file")
        data = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc}") from exc
    return warm_file_parse(data=data, name=str(path))


def when(moment: Any) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def validation_message(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
    return " ".join(exc.messages)
