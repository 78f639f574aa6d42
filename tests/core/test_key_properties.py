"""Properties of the canonical keys, tried on generated JSON values (Hypothesis).

The oracle is written apart from the code under test: two JSON values are equal when they are
equal by value, numbers compared exactly (as fractions), so ``1``, ``1.0`` and ``-0.0 + 1`` are
one number and ``2**53 + 1`` is not ``2**53``. Equal values must share a key; any other
difference, in the instance, the parameters, the model or its version, must not.
"""

from __future__ import annotations

import json
import random
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from caching.core.canonical import KeyRules, canonical_bytes, parse_json
from caching.core.keys import instance_digest, request_context

INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what a request may carry
NUMBERS = st.one_of(INT64, st.floats(allow_nan=False, allow_infinity=False))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(st.characters(codec="utf-8"), max_size=8))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(st.characters(codec="utf-8"), max_size=6), inner, max_size=4),
    ),
    max_leaves=12,
)
PROPERTIES = settings(max_examples=300, deadline=None, derandomize=True)


def by_value(value: Any) -> Any:
    """The oracle: a hashable form of ``value`` in which equal JSON values are equal."""
    if value is None or isinstance(value, bool | str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", Fraction(value))
    if isinstance(value, list):
        return ("list", tuple(by_value(item) for item in value))
    return ("object", frozenset((key, by_value(item)) for key, item in value.items()))


def canon(value: Any, rules: KeyRules | None = None) -> bytes:
    return canonical_bytes(value, max_depth=32, rules=rules)


def digest(instance: Any, *, model: str = "m", version: str = "", parameters: Any = None) -> str:
    context = request_context(
        model_identity=model, model_version=version, canonical_parameters=canon(parameters)
    )
    return instance_digest(context, canon(instance))


def respelled(value: Any, rng: random.Random) -> Any:
    """``value`` as another client may send it: keys in another order, numbers spelled otherwise."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and abs(value) <= 2**53 and rng.random() < 0.5:
        return float(value)
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53 and rng.random() < 0.5:
        return int(value)
    if isinstance(value, list):
        return [respelled(item, rng) for item in value]
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: respelled(item, rng) for key, item in items}
    return value


@PROPERTIES
@given(VALUES, st.randoms(use_true_random=False), st.sampled_from([None, 1, 2]))
def test_a_value_sent_any_equal_way_has_one_key(value: Any, rng: random.Random, indent: int | None) -> None:
    other = respelled(value, rng)
    assert by_value(other) == by_value(value)  # the respelling is equal by value, as meant
    sent = parse_json(json.dumps(other, indent=indent, ensure_ascii=rng.random() < 0.5).encode())
    assert canon(sent) == canon(other) == canon(value)
    assert digest(sent) == digest(value)


@PROPERTIES
@given(VALUES, VALUES)
def test_values_share_a_key_exactly_when_they_are_equal_by_value(left: Any, right: Any) -> None:
    assert (canon(left) == canon(right)) == (by_value(left) == by_value(right))
    assert (digest(left) == digest(right)) == (by_value(left) == by_value(right))


@PROPERTIES
@given(VALUES, VALUES, VALUES, st.text(max_size=8), st.text(max_size=8))
def test_other_parameters_model_or_version_give_another_key(
    instance: Any, parameters: Any, other_parameters: Any, model: str, version: str
) -> None:
    key = digest(instance, model="m", version="", parameters=parameters)
    if by_value(other_parameters) != by_value(parameters):
        assert digest(instance, model="m", version="", parameters=other_parameters) != key
    if model != "m":
        assert digest(instance, model=model, version="", parameters=parameters) != key
    if version != "":
        assert digest(instance, model="m", version=version, parameters=parameters) != key


@PROPERTIES
@given(INT64, INT64, st.integers(min_value=0, max_value=6))
def test_rounding_to_decimal_places_never_merges_distinct_integers(
    left: int, right: int, places: int
) -> None:
    rules = KeyRules(round_decimals=places)
    assert (canon(left, rules) == canon(right, rules)) == (left == right)


def rounded_exactly(number: int, digits: int) -> int:
    """``number`` to ``digits`` significant digits, half to even, in exact decimal arithmetic."""
    excess = len(str(abs(number))) - digits
    if excess <= 0:
        return number
    step = Decimal(10) ** excess
    return int((Decimal(number) / step).quantize(Decimal(1), rounding=ROUND_HALF_EVEN) * step)


@PROPERTIES
@given(INT64, INT64, st.integers(min_value=1, max_value=6))
def test_significant_digits_merge_integers_only_as_exact_rounding_does(
    left: int, right: int, digits: int
) -> None:
    rules = KeyRules(round_significant=digits)
    merged = canon(left, rules) == canon(right, rules)
    assert merged == (rounded_exactly(left, digits) == rounded_exactly(right, digits))


@PROPERTIES
@given(st.integers(min_value=1, max_value=99_999), st.integers(min_value=0, max_value=13), st.integers(-2, 2))
def test_significant_digits_round_integers_near_a_half_exactly(
    leading: int, exponent: int, nudge: int
) -> None:
    # Just below, at and just above halfway between two roundings: where a float's rounding
    # (53 bits first, then decimal digits) would decide otherwise than exact arithmetic.
    number = (leading * 10 + 5) * 10**exponent + nudge
    digits = len(str(leading))
    rules = KeyRules(round_significant=digits)
    assert canon(number, rules) == canon(rounded_exactly(number, digits))
