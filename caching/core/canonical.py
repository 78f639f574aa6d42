"""Canonical JSON: one byte string per value, so equal requests share a cache key."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from caching.core.errors import PredcacheError

# Doubles represent every integer up to 2**53 exactly; past it an integer and a
# double are the same number only when the double holds the integer exactly.
_EXACT_INT_LIMIT = 2**53
# orjson keeps integers in [-2**63, 2**64) and silently turns larger ones into doubles,
# which would let two different integers share one key. Such integers need 19+ digits.
INTEGER_MIN, INTEGER_MAX = -(2**63), 2**64 - 1  # the integers kept exact, inclusive
_LONG_DIGIT_RUN = re.compile(rb"\d{19}")


class InvalidJSON(PredcacheError, ValueError):
    """A client-supplied JSON document that predcache refuses to cache or forward."""

    code = "invalid_json"


def parse_json(body: bytes) -> Any:
    """Parse strict JSON: invalid UTF-8, NaN, Infinity and overflowing numbers are errors."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"request body is not valid JSON: {exc}") from exc
    if _LONG_DIGIT_RUN.search(body):
        # Rare: parse again, exactly, only to find integers that orjson rounded.
        try:
            json.loads(body, parse_int=_checked_int)
        except RecursionError:
            raise InvalidJSON("request body is nested too deeply") from None
    return document


def _checked_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:  # more digits than Python converts at all
        raise InvalidJSON("an integer in the request is out of range") from None
    if not INTEGER_MIN <= number <= INTEGER_MAX:
        raise InvalidJSON(f"integer {text[:40]} is out of range (-2**63 to 2**64-1)")
    return number


def canonical_number(number: int | float) -> int | float:
    """Map numbers that are equal by value (``1``, ``1.0``, ``-0.0``, ``0``) to one representative."""
    if type(number) is float:
        if not math.isfinite(number):
            raise InvalidJSON("NaN and Infinity are not JSON numbers")
        if number.is_integer() and -_EXACT_INT_LIMIT <= number <= _EXACT_INT_LIMIT:
            return int(number)
        return number
    if -_EXACT_INT_LIMIT <= number <= _EXACT_INT_LIMIT:
        return number
    as_float = float(number)
    return as_float if int(as_float) == number else number


def normalize(value: Any, *, max_depth: int, _depth: int = 0) -> Any:
    """Return ``value`` with canonical numbers, rejecting nesting deeper than ``max_depth``."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int or kind is float:
        return canonical_number(value)
    if _depth >= max_depth:
        raise InvalidJSON(f"value is nested deeper than {max_depth} levels")
    if kind is list:
        return [normalize(item, max_depth=max_depth, _depth=_depth + 1) for item in value]
    if kind is dict:
        return {key: normalize(item, max_depth=max_depth, _depth=_depth + 1) for key, item in value.items()}
    raise InvalidJSON(f"unsupported JSON value of type {kind.__name__}")


# What orjson writes differently from the canonical form, or may, as seen in its own output:
# an integral double below 2**53 ("1.0", "-0.0"; larger ones keep their double and spelling),
# an integer of 16 digits or more (past 2**53 it may be a double's value; a fraction's digits
# follow a "."), and null (orjson writes a NaN or an infinity as null). Such text inside a
# string only sends the value the slow way. Checked with bytes methods, not a regex: faster.
_INTEGRAL_DOUBLE = re.compile(rb"[0-9]\.0(?![0-9])")
_DIGITS_AS_NINES = bytes.maketrans(b"012345678", b"999999999")
_SIXTEEN_DIGITS, _SIXTEEN_FRACTION_DIGITS = b"9" * 16, b"." + b"9" * 16
# Python's own types only: anything else (a subclass, a date, a dataclass) fails the fast way.
_FAST_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def canonical_bytes(value: Any, *, max_depth: int, rules: KeyRules | None = None) -> bytes:
    """Serialize ``value`` canonically: sorted object keys, no whitespace, numbers by value.

    ``rules`` (a model's key rules) first round numbers and drop ignored fields, so that
    instances that differ only there share one key.

    Most values are written by orjson in canonical form already: when its sorted output shows
    no number that normalizing would change and too few brackets to nest past ``max_depth``,
    it is the answer (same bytes, several times faster; tests/core pins them).
    """
    if value is None:  # no parameters, most often; its "null" would send it the slow way below
        return b"null"
    if rules is None or not rules:
        try:
            written = orjson.dumps(value, option=_FAST_OPTIONS)
        except (TypeError, orjson.JSONEncodeError):
            pass  # the slow way names what is wrong
        else:
            if _written_canonically(written, max_depth):
                return written
    normalized = normalize(value, max_depth=max_depth)
    if rules is not None and rules:
        normalized = rules.apply(normalized)
    return orjson.dumps(normalized, option=orjson.OPT_SORT_KEYS)


def _written_canonically(written: bytes, max_depth: int) -> bool:
    """Whether orjson's sorted output of a value is its canonical form (see _INTEGRAL_DOUBLE)."""
    if written.count(b"[") + written.count(b"{") > max_depth or b"null" in written:
        return False  # maybe nested too deep (counted exactly the slow way), maybe a NaN
    if b".0" in written and _INTEGRAL_DOUBLE.search(written):
        return False
    nines = written.translate(_DIGITS_AS_NINES)
    return nines.count(_SIXTEEN_DIGITS) == nines.count(_SIXTEEN_FRACTION_DIGITS)


@dataclass(frozen=True, slots=True)
class KeyRules:
    """How a model widens its keys: numbers rounded, some object fields ignored.

    ``ignore_fields`` holds dotted paths (``"meta.request_id"``) into the instance's
    objects. The model always receives the instance unchanged; only its key is widened.
    """

    round_decimals: int | None = None
    round_significant: int | None = None
    ignore_fields: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        rounding = self.round_decimals is not None or self.round_significant is not None
        return rounding or bool(self.ignore_fields)

    def describe(self) -> str:
        """A stable text of the rules, for the model identity (changing a rule starts a fresh cache)."""
        return f"r{self.round_decimals}s{self.round_significant}i{','.join(sorted(self.ignore_fields))}"

    def apply(self, value: Any) -> Any:
        for path in self.ignore_fields:
            value = _without(value, path.split("."))
        if self.round_decimals is not None or self.round_significant is not None:
            value = self._rounded(value)
        return value

    def _rounded(self, value: Any) -> Any:
        kind = type(value)
        if kind is int:
            return self._round_integer(value)
        if kind is float:
            return canonical_number(self._round(value))
        if kind is list:
            return [self._rounded(item) for item in value]
        if kind is dict:
            return {key: self._rounded(item) for key, item in value.items()}
        return value

    def _round_integer(self, number: int) -> int | float:
        """Integers are rounded exactly: two different 64-bit ids never meet in one float."""
        if self.round_significant is None:
            return number  # rounding to decimal places leaves an integer as it is
        excess = len(str(abs(number))) - self.round_significant
        return canonical_number(round(number, -excess)) if excess > 0 else number

    def _round(self, number: float) -> float:
        if self.round_decimals is not None:
            return round(float(number), self.round_decimals)
        assert self.round_significant is not None
        return float(f"{number:.{self.round_significant}g}")


def _without(value: Any, path: list[str]) -> Any:
    """``value`` with the field at ``path`` removed from every object along it (lists included)."""
    if type(value) is list:
        return [_without(item, path) for item in value]
    if type(value) is not dict or path[0] not in value:
        return value
    if len(path) == 1:
        return {key: item for key, item in value.items() if key != path[0]}
    return {**value, path[0]: _without(value[path[0]], path[1:])}
