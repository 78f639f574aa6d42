"""HMAC tags on stored values: what verifies, what does not, rotation, and the memory of decoded values."""

from __future__ import annotations

import logging

import pytest

from caching.core.codec import (
    FLAG_TAGGED,
    CachedPrediction,
    CodecError,
    DecodedEntries,
    IntegrityError,
    decode,
    decode_header,
    encode,
)
from caching.core.integrity import TAG_BYTES, IntegrityFailures, ValueKeys
from caching.core.stats import StatsRecorder

KEY, OLD_KEY, OTHER_KEY = b"k" * 32, b"o" * 32, b"x" * 32
NS, DIGEST = "pc:{inst.m1}", "0123456789abcdef0123456789abcdef"
ENTRY = CachedPrediction({"label": "cat", "score": 0.75}, "g1.g2", 1_700_000_000.5, "7", "dm", 1_700_000_300)


def tagged(
    entry: CachedPrediction = ENTRY, *, keys: ValueKeys | None = None, compress_over: int | None = None
) -> bytes:
    keys = keys or ValueKeys(KEY)
    return encode(entry, keys=keys, namespace=NS, digest=DIGEST, compress_over=compress_over)


def test_a_tagged_value_verifies_and_decodes_to_its_entry():
    raw = tagged()
    assert raw[1] & FLAG_TAGGED
    assert len(raw) == len(encode(ENTRY)) + TAG_BYTES
    assert decode(raw, keys=ValueKeys(KEY), namespace=NS, digest=DIGEST) == ENTRY
    # The header is where it was: header readers (reclaim, the Lua lookup) see the same metadata.
    assert decode_header(raw) == decode_header(encode(ENTRY))


def test_a_compressed_tagged_value_verifies_too():
    entry = CachedPrediction({"vector": [0.25] * 2000}, "g", 1.0)
    raw = tagged(entry, compress_over=1024)
    assert raw[1] & 1 and raw[1] & FLAG_TAGGED
    assert decode(raw, keys=ValueKeys(KEY), namespace=NS, digest=DIGEST) == entry


def _regions(raw: bytes) -> dict[str, range]:
    header_end = 4 + int.from_bytes(raw[2:4], "big")
    return {
        "preamble": range(0, 4),
        "header": range(4, header_end),
        "payload": range(header_end, len(raw) - TAG_BYTES),
        "tag": range(len(raw) - TAG_BYTES, len(raw)),
    }


@pytest.mark.parametrize("region", ["preamble", "header", "payload", "tag"])
def test_any_byte_changed_anywhere_fails_verification(region):
    raw = tagged()
    positions = _regions(raw)[region]
    assert len(positions) > 0
    for position in positions:
        for flip in (0x01, 0x80):
            tampered = bytearray(raw)
            tampered[position] ^= flip
            with pytest.raises(IntegrityError):
                decode(bytes(tampered), keys=ValueKeys(KEY), namespace=NS, digest=DIGEST)


def test_a_forged_prediction_with_a_made_up_tag_fails():
    forged = CachedPrediction({"label": "dog", "score": 0.99}, ENTRY.generation, ENTRY.created_at)
    raw = tagged(forged, keys=ValueKeys(OTHER_KEY))  # well formed, tagged under a key not ours
    with pytest.raises(IntegrityError):
        decode(raw, keys=ValueKeys(KEY), namespace=NS, digest=DIGEST)
    with pytest.raises(IntegrityError):  # cut or padded
        decode(raw[:-1], keys=ValueKeys(KEY), namespace=NS, digest=DIGEST)
    with pytest.raises(IntegrityError):
        decode(raw + b"\x00", keys=ValueKeys(KEY), namespace=NS, digest=DIGEST)


@pytest.mark.parametrize(
    ("namespace", "digest"),
    [
        (NS, "f" * 32),  # another instance of the same model
        ("pc:{inst.m2}", DIGEST),  # the same digest under another model
        ("pc:{other.m1}", DIGEST),  # another installation sharing the Redis
        ("pc:{inst.m1}0", DIGEST[1:]),  # the boundary between the two moved
    ],
    ids=["digest", "model", "installation", "boundary"],
)
def test_a_genuine_value_copied_to_another_entry_fails(namespace, digest):
    raw = tagged()
    with pytest.raises(IntegrityError):
        decode(raw, keys=ValueKeys(KEY), namespace=namespace, digest=digest)


def test_with_a_key_set_an_untagged_value_fails_even_if_otherwise_valid():
    with pytest.raises(IntegrityError, match="no HMAC tag"):
        decode(encode(ENTRY), keys=ValueKeys(KEY), namespace=NS, digest=DIGEST)
    # Nor can a tag be stripped off with its flag.
    raw = tagged()
    stripped = bytes([raw[0], raw[1] & ~FLAG_TAGGED]) + raw[2:-TAG_BYTES]
    assert decode(stripped) == ENTRY  # a well-formed untagged value...
    with pytest.raises(IntegrityError):  # ...that is not served while a key is set
        decode(stripped, keys=ValueKeys(KEY), namespace=NS, digest=DIGEST)


def test_the_old_key_is_accepted_for_reading_and_the_new_one_writes():
    rotating = ValueKeys(KEY, OLD_KEY)
    written_before = tagged(keys=ValueKeys(OLD_KEY))
    assert decode(written_before, keys=rotating, namespace=NS, digest=DIGEST) == ENTRY
    with pytest.raises(IntegrityError):  # once the old key is dropped
        decode(written_before, keys=ValueKeys(KEY), namespace=NS, digest=DIGEST)

    written_now = tagged(keys=rotating)
    assert decode(written_now, keys=ValueKeys(KEY), namespace=NS, digest=DIGEST) == ENTRY
    with pytest.raises(IntegrityError):
        decode(written_now, keys=ValueKeys(OLD_KEY), namespace=NS, digest=DIGEST)
    with pytest.raises(IntegrityError):  # the old key does not open other entries' values either
        decode(written_before, keys=rotating, namespace=NS, digest="f" * 32)


def test_without_a_key_values_are_untagged_and_a_tag_is_not_checked():
    raw = encode(ENTRY)
    assert not raw[1] & FLAG_TAGGED and raw == encode(ENTRY, namespace=NS, digest=DIGEST)
    assert decode(raw) == ENTRY
    # A value tagged before the key was removed is read without checking its tag.
    assert decode(tagged()) == ENTRY
    with pytest.raises(CodecError):  # flagged tagged, too short to hold a tag
        decode(raw[:4] + b"{}", keys=None)
    with pytest.raises(CodecError):
        decode(bytes([1, FLAG_TAGGED]) + raw[2:TAG_BYTES])


def test_keys_are_never_empty_and_never_printed():
    with pytest.raises(ValueError, match="empty"):
        ValueKeys(b"")
    shown = repr(ValueKeys(KEY, OLD_KEY))
    assert "kkkk" not in shown and "oooo" not in shown and "2 key" in shown


def test_the_memory_of_decoded_values_never_lets_an_unverified_value_through():
    decoded = DecodedEntries(keys=ValueKeys(KEY))
    raw = tagged()
    entry = decoded.decode(NS, DIGEST, raw)
    assert entry == ENTRY and len(decoded) == 1  # tagged values are kept (the flag is no compression)
    assert decoded.decode(NS, DIGEST, bytes(bytearray(raw))) is entry  # not parsed nor verified again
    # The same bytes as another model's entry of the same digest: verified as that entry, and refused.
    with pytest.raises(IntegrityError):
        decoded.decode("pc:{inst.m2}", DIGEST, raw)
    tampered = bytearray(raw)
    tampered[-1] ^= 1
    with pytest.raises(IntegrityError):
        decoded.decode(NS, DIGEST, bytes(tampered))
    assert decoded.decode(NS, DIGEST, raw) == ENTRY

    # A memory is bound to its keys: one with another key verifies for itself.
    other = DecodedEntries(keys=ValueKeys(OTHER_KEY))
    with pytest.raises(IntegrityError):
        other.decode(NS, DIGEST, raw)
    assert len(other) == 0
    with pytest.raises(AttributeError):
        decoded.keys = ValueKeys(OTHER_KEY)  # type: ignore[misc]


def test_failures_are_counted_each_time_and_warned_of_once_a_minute(caplog):
    stats, now = StatsRecorder(), [100.0]
    failures = IntegrityFailures(stats, warn_every=60, monotonic=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="caching.core.integrity"):
        failures.failed(NS, "iris", 1)
        now[0] += 30
        failures.failed(NS, "iris", 2)
        failures.failed("pc:{inst.m2}", "echo", 1)
        now[0] += 31
        failures.failed(NS, "iris", 4)
    assert stats.pending(NS)["integrity_failures"] == 7
    assert stats.pending("pc:{inst.m2}")["integrity_failures"] == 1
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 3
    assert warnings[0].startswith("1 cached value(s) of iris failed their HMAC check")
    assert warnings[1].startswith("1 cached value(s) of echo")
    assert warnings[2].startswith("6 cached value(s) of iris")  # the two held back, and these four
