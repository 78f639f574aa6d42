"""Self-describing cache values: a version byte, flags, a JSON header and a JSON payload.

Layout (never pickle, so reading a value cannot run code)::

    byte 0     format version (1)
    byte 1     flags (bit 0: payload is zlib-compressed)
    bytes 2-3  header length, unsigned big-endian
    header     JSON object with metadata (generation, creation time, model version)
    payload    JSON of the prediction
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

FORMAT_VERSION = 1
FLAG_ZLIB = 0x01
_PREAMBLE = struct.Struct(">BBH")


class CodecError(ValueError):
    """A stored value that cannot be decoded; callers treat it as a miss."""


@dataclass(frozen=True, slots=True)
class CachedPrediction:
    """One prediction as stored in Redis, with the metadata needed to trust it."""

    prediction: Any
    generation: str
    created_at: float
    model_version_id: str | None = None
    deployed_model_id: str | None = None


def encode(entry: CachedPrediction, *, compress_over: int | None = None) -> bytes:
    """Serialize ``entry``; compress the payload when it is longer than ``compress_over`` bytes."""
    header = orjson.dumps(
        {
            "g": entry.generation,
            "t": entry.created_at,
            "v": entry.model_version_id,
            "d": entry.deployed_model_id,
        }
    )
    payload = orjson.dumps(entry.prediction)
    flags = 0
    if compress_over is not None and len(payload) > compress_over:
        payload = zlib.compress(payload)
        flags |= FLAG_ZLIB
    return _PREAMBLE.pack(FORMAT_VERSION, flags, len(header)) + header + payload


def decode(raw: bytes) -> CachedPrediction:
    """Parse a stored value, raising :class:`CodecError` for anything unexpected."""
    if len(raw) < _PREAMBLE.size:
        raise CodecError("value shorter than its preamble")
    version, flags, header_length = _PREAMBLE.unpack_from(raw)
    if version != FORMAT_VERSION:
        raise CodecError(f"unknown value format version {version}")
    header_end = _PREAMBLE.size + header_length
    try:
        header = orjson.loads(raw[_PREAMBLE.size : header_end])
        payload = raw[header_end:]
        if flags & FLAG_ZLIB:
            payload = zlib.decompress(payload)
        return CachedPrediction(
            prediction=orjson.loads(payload),
            generation=header["g"],
            created_at=header["t"],
            model_version_id=header["v"],
            deployed_model_id=header["d"],
        )
    except (orjson.JSONDecodeError, zlib.error, KeyError, TypeError) as exc:
        raise CodecError(f"corrupt value: {exc}") from exc
