"""The value codec: round trips, compression, and refusal of anything unexpected."""

from __future__ import annotations

import pickle

import pytest

from caching.core.codec import CachedPrediction, CodecError, decode, encode


@pytest.mark.parametrize("prediction", [0, None, False, "", [], {}, 1.5, {"scores": [0.1, 0.9]}, "ü"])
def test_round_trip(prediction):
    entry = CachedPrediction(prediction, "g1.g2", 1700000000.5, "7", "dm")
    assert decode(encode(entry)) == entry


def test_large_payloads_are_compressed_and_flagged():
    entry = CachedPrediction({"vector": [0.25] * 2000}, "g", 1.0)
    plain = encode(entry)
    packed = encode(entry, compress_over=1024)
    assert len(packed) < len(plain) / 5
    assert packed[1] & 1
    assert decode(packed) == entry


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x01",
        b"\x02\x00\x00\x02{}null",  # unknown format version
        b"\x01\x00\x00\x05{}",  # header longer than the value
        b"\x01\x01\x00\x02{}garbage",  # flagged compressed, is not
        b"\x01\x00\x00\x02{}null",  # header without the required fields
        pickle.dumps({"a": 1}),
    ],
)
def test_corrupt_values_raise_codec_error(raw):
    with pytest.raises(CodecError):
        decode(raw)
