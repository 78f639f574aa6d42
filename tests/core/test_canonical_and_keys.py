"""Canonical JSON and key building (plain Python, no Django, no Redis)."""

from __future__ import annotations

import pytest

from caching.core.canonical import InvalidJSON, canonical_bytes, parse_json
from caching.core.keys import KeySpace, instance_digest, request_context


def canon(value):
    return canonical_bytes(value, max_depth=32)


@pytest.mark.parametrize(
    "left,right",
    [
        (1, 1.0),
        (0, -0.0),
        ([1, 2, 3], [1.0, 2.0, 3.0]),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        ({"x": {"z": 1, "y": [2.0]}}, {"x": {"y": [2], "z": 1.0}}),
        (2**53, float(2**53)),
        (10**19, 1e19),
    ],
)
def test_equal_values_share_one_canonical_form(left, right):
    assert canon(left) == canon(right)


@pytest.mark.parametrize(
    "left,right",
    [
        (1, True),
        (0, False),
        (0, None),
        (1, "1"),
        (2**53 + 1, 2**53),
        (0.1, 0.10000000000000002),
        ([1, 2], [2, 1]),
        ({"a": None}, {}),
    ],
)
def test_different_values_stay_different(left, right):
    assert canon(left) != canon(right)


def test_canonical_form_is_compact_and_sorted():
    assert canon({"b": [1.5, 2.0], "a": "x"}) == b'{"a":"x","b":[1.5,2]}'


def test_nesting_beyond_the_limit_is_rejected():
    deep = []
    for _ in range(40):
        deep = [deep]
    with pytest.raises(InvalidJSON):
        canonical_bytes(deep, max_depth=32)


@pytest.mark.parametrize(
    "body",
    [
        b"[NaN]",
        b"[Infinity]",
        b"[1e999]",
        b'"\xff"',
        b"[1,]",
        b"[18446744073709551616]",
        b"[-9223372036854775809]",
        b"[" * 900 + b"12345678901234567890123" + b"]" * 900,
    ],
)
def test_strict_parsing_rejects_what_json_does_not_allow(body):
    with pytest.raises(InvalidJSON):
        parse_json(body)


@pytest.mark.parametrize(
    "body,value",
    [
        (b"[18446744073709551615, -9223372036854775808]", [2**64 - 1, -(2**63)]),
        (b'["123456789012345678901234567890"]', ["123456789012345678901234567890"]),
        (b"[0.12345678901234567890123]", [0.12345678901234568]),
    ],
)
def test_long_digit_runs_within_range_parse_exactly(body, value):
    assert parse_json(body) == value


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_have_no_canonical_form(number):
    with pytest.raises(InvalidJSON):
        canon([number])


def test_digest_covers_model_version_parameters_and_instance():
    def digest(identity="m", version="1", parameters=b"{}", instance=b"[1]"):
        context = request_context(
            model_identity=identity, model_version=version, canonical_parameters=parameters
        )
        return instance_digest(context, instance)

    base = digest()
    assert len(base) == 32  # 128-bit blake2b
    assert base == digest()
    assert (
        len(
            {
                base,
                digest(identity="n"),
                digest(version="2"),
                digest(parameters=b'{"t":1}'),
                digest(instance=b"[2]"),
            }
        )
        == 5
    )


def test_field_boundaries_cannot_be_shifted():
    one = request_context(model_identity="ab", model_version="c", canonical_parameters=b"{}")
    two = request_context(model_identity="a", model_version="bc", canonical_parameters=b"{}")
    assert instance_digest(one, b"1") != instance_digest(two, b"1")


def test_keys_of_one_model_share_a_cluster_hash_tag():
    keys = KeySpace("pc:", "a1b2c3")
    namespace = keys.namespace(42)
    assert keys.entry(namespace, "ab").startswith("pc:{a1b2c3.m42}:")
    assert keys.generation(namespace).startswith("pc:{a1b2c3.m42}:")
    assert keys.version_generation(namespace, "v/../../x").startswith("pc:{a1b2c3.m42}:gen:v:")


def test_installations_sharing_a_prefix_have_distinct_keys():
    staging, production = KeySpace("pc:", "5a1"), KeySpace("pc:", "9f0")
    assert staging.generation(staging.namespace(1)) != production.generation(production.namespace(1))
    assert staging.stats(staging.namespace(1)) != production.stats(production.namespace(1))


@pytest.mark.parametrize("installation", ["", "a}b", "a{b", "a:b", "a.b"])
def test_an_installation_id_that_could_break_the_hash_tag_is_refused(installation):
    with pytest.raises(ValueError):
        KeySpace("pc:", installation)
