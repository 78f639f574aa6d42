"""Warm sets: instances read from JSON Lines or CSV (every bad line reported), stored per model.

A file is JSON Lines (one JSON instance a line, blank lines skipped) unless its name ends in
``.csv``: then its first row names the fields and every further row is one instance object.
A CSV cell is a number when it is written exactly as a JSON number (``3``, ``-0.5``, ``1e3``;
not ``007``, `` 3`` or ``NaN``, which stay text), JSON ``null`` when empty, and text otherwise.
Every instance passes the strict parser and the key builder's checks, so a stored set can be
keyed; a file with any bad line stores nothing.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from caching.core.canonical import InvalidJSON, canonical_bytes, parse_json
from caching.core.errors import PredcacheError
from caching.models import ModelEndpoint, WarmSet

# A message lists this many bad lines; the count says how many more there are.
FILE_MAX_BYTES = 128 * 2**20  # read whole into memory: a bound before the instance count's
ERRORS_SHOWN = 20
# RFC 8259's number grammar: what a CSV cell must look like to be read as a number.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# orjson places an error within the one line it was given: only the column says anything.
_ORJSON_POSITION = re.compile(r"line 1 column (\d+) \(char \d+\)")

# Passed for a schedule field of warm_set_upsert: leave it as it is.
KEEP: Any = object()


@dataclass(frozen=True, slots=True)
class LineError:
    """What is wrong with one line of a warm file (``line`` None: with the file as a whole)."""

    line: int | None
    message: str

    def __str__(self) -> str:
        return self.message if self.line is None else f"line {self.line}: {self.message}"


class WarmFileInvalid(PredcacheError):
    """A warm file with bad lines, or too many instances; nothing was stored."""

    code = "warm_file_invalid"

    def __init__(self, source: str, errors: list[LineError]) -> None:
        self.source = source
        self.errors = errors
        shown = "; ".join(str(error) for error in errors[:ERRORS_SHOWN])
        more = len(errors) - ERRORS_SHOWN
        super().__init__(f"{source}: {shown}" + (f"; and {more} more bad lines" if more > 0 else ""))


def warm_file_parse(*, data: bytes, name: str, max_instances: int | None = None) -> list[Any]:
    """The instances of a JSONL or CSV file (CSV when ``name`` ends in .csv); raises WarmFileInvalid.

    ``max_instances`` defaults to PREDCACHE_WARM_MAX_INSTANCES.
    """
    limit = settings.PREDCACHE_WARM_MAX_INSTANCES if max_instances is None else max_instances
    if len(data) > FILE_MAX_BYTES:
        raise WarmFileInvalid(
            name, [LineError(None, f"larger than {FILE_MAX_BYTES // 2**20} MiB: split the file")]
        )
    rows = _csv_rows(data) if name.lower().endswith(".csv") else _jsonl_rows(data)
    instances: list[Any] = []
    errors: list[LineError] = []
    for line, value in rows:
        if isinstance(value, LineError):
            errors.append(value)
            continue
        try:
            canonical_bytes(value, max_depth=settings.PREDCACHE_MAX_DEPTH)
        except InvalidJSON as exc:
            errors.append(LineError(line, _reason(exc)))
            continue
        if holds_nul(value):
            errors.append(LineError(line, "a NUL character (\\u0000), which the database cannot store"))
            continue
        instances.append(value)
        if len(instances) > limit:
            too_many = f"more than {limit:,} instances (PREDCACHE_WARM_MAX_INSTANCES): split the file"
            errors.append(LineError(None, too_many))
            break
    if not errors and not instances:
        errors.append(LineError(None, "no instances"))
    if errors:
        raise WarmFileInvalid(name, errors)
    return instances


def holds_nul(value: Any) -> bool:
    """Whether a JSON value holds the NUL character in a string or key: PostgreSQL's jsonb refuses it."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(holds_nul(item) for item in value)
    if isinstance(value, dict):
        return any("\x00" in key or holds_nul(item) for key, item in value.items())
    return False


def warm_parameters_check(parameters: Any) -> None:
    """Raise ValidationError unless ``parameters`` is None or a JSON object that can be keyed."""
    if parameters is None:
        return
    if not isinstance(parameters, dict):
        raise ValidationError("The parameters must be a JSON object (or empty).")
    try:
        canonical_bytes(parameters, max_depth=settings.PREDCACHE_MAX_DEPTH)
    except InvalidJSON as exc:
        raise ValidationError(f"The parameters cannot be keyed: {_reason(exc)}") from exc
    if holds_nul(parameters):
        raise ValidationError("The parameters hold a NUL character (\\u0000): the database cannot store it.")


@transaction.atomic
def warm_set_upsert(
    *,
    model: ModelEndpoint,
    name: str,
    instances: list[Any],
    parameters: dict[str, Any] | None = None,
    every_seconds: int | None = KEEP,
    cron: str = KEEP,
) -> tuple[WarmSet, bool]:
    """Create the warm set ``name`` of ``model``, or replace its instances and parameters.

    Schedule fields left as KEEP keep their value (None and "" clear them); a set is warmed on
    an interval or on a cron schedule, not both. Raises ValidationError (and changes nothing)
    for a bad name, schedule or parameters.
    """
    warm_parameters_check(parameters)
    if len(instances) > settings.PREDCACHE_WARM_MAX_INSTANCES:
        raise ValidationError(
            f"more than {settings.PREDCACHE_WARM_MAX_INSTANCES:,} instances (PREDCACHE_WARM_MAX_INSTANCES)"
        )
    warm_set = WarmSet.objects.select_for_update().filter(model=model, name=name).first()
    created = warm_set is None
    if warm_set is None:
        warm_set = WarmSet(model=model, name=name)
    warm_set.instances = instances
    warm_set.parameters = parameters
    if every_seconds is not KEEP:
        warm_set.every_seconds = every_seconds
    if cron is not KEEP:
        warm_set.cron = cron
    warm_set.full_clean()
    warm_set.save()
    return warm_set, created


def _jsonl_rows(data: bytes) -> Iterator[tuple[int, Any]]:
    """(line number, instance or LineError) for each line that is not blank."""
    for number, line in enumerate(data.split(b"\n"), start=1):
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")  # a byte order mark is not part of the JSON
        if not line.strip():
            continue
        try:
            yield number, parse_json(line)
        except InvalidJSON as exc:
            yield number, LineError(number, _reason(exc))


def _csv_rows(data: bytes) -> Iterator[tuple[int, Any]]:
    """(line number a row starts on, instance object or LineError) for each row after the header."""
    try:
        text = data.decode("utf-8-sig")  # spreadsheets often save a byte order mark first
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        yield line, LineError(line, "not UTF-8 text")
        return
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    ended = 0  # the line the previous row ended on: a quoted cell may span lines
    while True:
        start = ended + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, LineError(reader.line_num, f"not valid CSV: {exc}")
            return
        ended = reader.line_num
        if not row or row == [""]:
            continue
        if header is None:
            problem = _header_problem(row)
            if problem:
                yield start, LineError(start, problem)
                return
            header = row
            continue
        if len(row) != len(header):
            yield start, LineError(start, f"{len(row)} values, but the header names {len(header)} fields")
            continue
        try:
            yield start, {field: _cell(value) for field, value in zip(header, row, strict=True)}
        except InvalidJSON as exc:
            yield start, LineError(start, _reason(exc))


def _header_problem(row: list[str]) -> str | None:
    if any(not name for name in row):
        return "the header has an empty field name"
    duplicates = sorted({name for name in row if row.count(name) > 1})
    if duplicates:
        return f"the header names {', '.join(map(repr, duplicates))} more than once"
    return None


def _cell(text: str) -> Any:
    """A CSV cell's value: a number when written as a JSON number, null when empty, else the text."""
    if not text:
        return None
    if _JSON_NUMBER.fullmatch(text):
        return parse_json(text.encode())  # exact integers; one beyond 64 bits is an error
    return text


def _reason(exc: InvalidJSON) -> str:
    """The parser's message in a line's words (it speaks of a request body)."""
    message = str(exc).replace("request body is ", "").replace("in the request ", "")
    return _ORJSON_POSITION.sub(r"column \1", message)
