"""The value codec: round trips, compression, and refusal of anything unexpected."""

from __future__ import annotations

import pickle

import pytest

from caching.core.codec import CachedPrediction, CodecError, DecodedEntries, decode, encode


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


def test_decoded_entries_parse_a_value_once_while_it_stays_the_same():
    decoded = DecodedEntries()
    first = encode(CachedPrediction({"label": 1}, "g", 1.0))
    entry = decoded.decode("ns", "d", first)
    assert entry == decode(first)
    # Equal bytes (another object, as each read returns): the same entry, not parsed again.
    assert decoded.decode("ns", "d", bytes(bytearray(first))) is entry

    # A new value under the key (recomputed, purged and written again) is read as it is now.
    second = encode(CachedPrediction({"label": 2}, "g", 2.0))
    assert decoded.decode("ns", "d", second) == decode(second)
    assert decoded.decode("ns", "d", first) == decode(first)
    with pytest.raises(CodecError):
        decoded.decode("ns", "d", b"\x01\x00\x00\x02{}null")


def test_decoded_entries_stay_within_their_bounds():
    decoded = DecodedEntries(max_entries=3, max_bytes=10_000, max_value_bytes=200)
    large = encode(CachedPrediction("x" * 300, "g", 1.0))
    assert decoded.decode("ns", "large", large) == decode(large)
    assert len(decoded) == 0  # over max_value_bytes: decoded every time, never kept
    # Compressed, a small value may hold any amount of JSON: never kept either.
    packed = encode(CachedPrediction([0.5] * 5000, "g", 1.0), compress_over=10)
    assert len(packed) <= 200 and decoded.decode("ns", "packed", packed) == decode(packed)
    assert len(decoded) == 0

    small = [encode(CachedPrediction(n, "g", 1.0)) for n in range(4)]
    for n, raw in enumerate(small):
        decoded.decode("ns", f"d{n}", raw)
    assert len(decoded) == 1  # the fourth found three kept: all forgotten, then it was kept
    assert decoded.decode("ns", "d3", small[3]) == decode(small[3])

    by_size = DecodedEntries(max_entries=100, max_bytes=2 * len(small[0]), max_value_bytes=200)
    for n, raw in enumerate(small):
        by_size.decode("ns", f"d{n}", raw)
    assert len(by_size) == 2  # the third would have passed max_bytes: forgotten, then kept
