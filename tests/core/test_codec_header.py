"""Reading only a value's header: what reclaim needs, without the (possibly large) payload."""

from __future__ import annotations

import struct

import pytest

from caching.core.codec import CachedPrediction, CodecError, decode_header, encode


def test_the_header_is_read_from_a_prefix_of_the_value():
    raw = encode(
        CachedPrediction({"vector": [0.5] * 5000}, "g1.g2", 1700000000.5, "7", "dm"), compress_over=10
    )
    header = decode_header(raw[:200])
    assert (header["g"], header["t"], header["v"], header["d"]) == ("g1.g2", 1700000000.5, "7", "dm")


def test_a_prefix_that_stops_inside_the_header_is_refused():
    raw = encode(CachedPrediction(1, "g", 1.0, "v" * 600, None))
    with pytest.raises(CodecError, match="cut short"):
        decode_header(raw[:512])
    assert decode_header(raw)["v"] == "v" * 600


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x01\x00",
        b"\x02\x00\x00\x02{}",  # unknown format version
        b"\x01\x00\x00\x02[]",  # not an object
        b"\x01\x00\x00\x05{oops",
        struct.pack(">BBH", 1, 0, 4) + b"null",
    ],
)
def test_anything_else_is_a_codec_error(raw):
    with pytest.raises(CodecError):
        decode_header(raw)
