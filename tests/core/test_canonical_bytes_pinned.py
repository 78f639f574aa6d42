"""The canonical bytes of tricky values, pinned: changing them changes keys (then bump KEY_FORMAT_VERSION)."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caching.core.canonical import canonical_bytes, normalize
from caching.core.keys import KEY_FORMAT_VERSION, instance_digest, instance_digests, request_context

PINNED = [
    (1, b"1"),
    (1.0, b"1"),
    (-0.0, b"0"),
    (0.5, b"0.5"),
    (-1.25e-7, b"-1.25e-7"),
    (123456789012345.0, b"123456789012345"),
    (2**53, b"9007199254740992"),
    (float(2**53), b"9007199254740992"),
    (2**53 + 1, b"9007199254740993"),
    (2**53 + 2, b"9007199254740994.0"),  # an integer a double holds exactly: by value, a double
    (9007199254740994.0, b"9007199254740994.0"),
    (1e16, b"1e+16"),
    (1.5e16, b"1.5e+16"),
    (10**19, b"1e+19"),
    (2**64 - 1, b"18446744073709551615"),
    (-(2**63), b"-9.223372036854776e+18"),
    (-(2**63) + 1, b"-9223372036854775807"),
    (1234567890123456.5, b"1234567890123456.5"),
    (0.1234567890123456789, b"0.12345678901234568"),
    (True, b"true"),
    (None, b"null"),
    ("1.0", b'"1.0"'),
    ("12345678901234567890", b'"12345678901234567890"'),
    ('é\u2028"\\\n😀', b'"\xc3\xa9\xe2\x80\xa8\\"\\\\\\n\xf0\x9f\x98\x80"'),
    ([], b"[]"),
    ({}, b"{}"),
    ([1, 2.0, [3.5, {"b": 1, "a": -0.0}]], b'[1,2,[3.5,{"a":0,"b":1}]]'),
    ({"b": 1, "a": 2, "B": 3, "é": 4, "aa": 5}, b'{"B":3,"a":2,"aa":5,"b":1,"\xc3\xa9":4}'),
    ({"x": None, "y": [None, False]}, b'{"x":null,"y":[null,false]}'),
]


@pytest.mark.parametrize("value,expected", PINNED, ids=[repr(v)[:40] for v, _ in PINNED])
def test_canonical_bytes_are_pinned(value, expected):
    assert canonical_bytes(value, max_depth=32) == expected


def test_the_key_format_version_and_a_digest_are_pinned():
    context = request_context(model_identity="echo|http|x", model_version="", canonical_parameters=b"null")
    assert KEY_FORMAT_VERSION == b"pc1"
    assert instance_digest(context, b"[1]") == "9473d5e293775e0dc1651406bb4e15e7"
    assert instance_digests(context, [b"[1]", b"[2]"]) == [
        instance_digest(context, b"[1]"),
        instance_digest(context, b"[2]"),
    ]


def test_a_context_is_hashed_alike_whether_remembered_or_too_long_to_be():
    from caching.core.keys import _remembered_context_hasher

    for parameters in (b'{"k":1}', b'{"k":"' + b"x" * 4096 + b'"}'):
        context = request_context(
            model_identity="echo|http|x", model_version="", canonical_parameters=parameters
        )
        before = _remembered_context_hasher.cache_info().currsize
        for _ in range(2):  # the second time from memory, where it is kept
            assert instance_digests(context, [b"[1]", b"[2]"]) == [
                instance_digest(context, b"[1]"),
                instance_digest(context, b"[2]"),
            ]
        # Clients choose the parameters: a long context is never kept in the process.
        grown = _remembered_context_hasher.cache_info().currsize - before
        assert grown == (1 if len(context) <= 1024 else 0)


def test_nesting_at_the_limit_passes_and_one_deeper_fails_the_fast_way_too():
    from caching.core.canonical import InvalidJSON

    value: list = []
    for _ in range(31):
        value = [value]
    assert canonical_bytes(value, max_depth=32) == b"[" * 32 + b"]" * 32
    with pytest.raises(InvalidJSON):
        canonical_bytes([value], max_depth=32)
    with pytest.raises(InvalidJSON):
        canonical_bytes([math.nan], max_depth=32)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1.0, -0.0, 2.0**53, 2.0**60, 1e16, 123.0])
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_the_fast_way_writes_what_normalizing_writes(value):
    slow = orjson.dumps(normalize(value, max_depth=32), option=orjson.OPT_SORT_KEYS)
    assert canonical_bytes(value, max_depth=32) == slow
