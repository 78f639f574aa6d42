"""Self-describing cache values: a version byte, flags, a JSON header and a JSON payload.

Layout (never pickle, so reading a value cannot run code)::

    byte 0     format version (1)
    byte 1     flags (bit 0: payload is zlib-compressed, bit 1: zstd-compressed, bit 2: tagged)
    bytes 2-3  header length, unsigned big-endian
    header     JSON object with metadata: generation "g", creation time "t", fresh until
               "x" (absent in values written before it existed: fresh for their whole TTL),
               model version "v" and deployed model "d"
    payload    JSON of the prediction
    tag        when tagged: 32 bytes, the HMAC-SHA256 of all the bytes before it and the entry's
               identity (caching.core.integrity)

The tag is last so that everything read by offset (the Lua scripts and :func:`decode_header`
read the header) stays where it was.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from caching.core.integrity import TAG_BYTES, ValueKeys

FORMAT_VERSION = 1
FLAG_ZLIB = 0x01
FLAG_ZSTD = 0x02
FLAG_TAGGED = 0x04  # an HMAC tag of TAG_BYTES ends the value
_COMPRESSED = FLAG_ZLIB | FLAG_ZSTD
_PREAMBLE = struct.Struct(">BBH")
_MAX_PAYLOAD = 256 * 1024 * 1024  # a decompression bomb stops here


class CodecError(ValueError):
    """A stored value that cannot be decoded; callers treat it as a miss."""


class IntegrityError(CodecError):
    """A value whose HMAC tag does not verify (forged, copied from another entry, untagged): a miss."""


# Not frozen: built on every hit, where a frozen dataclass's __init__ (object.__setattr__ per
# field) costs about three times as much. Nothing changes one after it is built.
@dataclass(slots=True)
class CachedPrediction:
    """One prediction as stored in Redis, with the metadata needed to trust it."""

    prediction: Any
    generation: str
    created_at: float
    model_version_id: str | None = None
    deployed_model_id: str | None = None
    fresh_until: float | None = None  # None: fresh for as long as Redis keeps it

    def age(self, now: float) -> float:
        return max(0.0, now - self.created_at)


def encode(
    entry: CachedPrediction,
    *,
    compress_over: int | None = None,
    compression: str = "zlib",
    keys: ValueKeys | None = None,
    namespace: str = "",
    digest: str = "",
) -> bytes:
    """Serialize ``entry``; compress the payload (zlib or zstd) when longer than ``compress_over``.

    With ``keys``, the value ends with its tag as the entry ``digest`` of ``namespace``.
    """
    header: dict[str, Any] = {
        "g": entry.generation,
        "t": entry.created_at,
        "v": entry.model_version_id,
        "d": entry.deployed_model_id,
    }
    if entry.fresh_until is not None:
        header["x"] = entry.fresh_until
    header_bytes = orjson.dumps(header)
    payload = orjson.dumps(entry.prediction)
    flags = 0
    if compress_over is not None and len(payload) > compress_over:
        if compression == "zstd":
            payload = _zstd().ZstdCompressor(level=3).compress(payload)
            flags |= FLAG_ZSTD
        else:
            payload = zlib.compress(payload)
            flags |= FLAG_ZLIB
    if keys is None:
        return _PREAMBLE.pack(FORMAT_VERSION, flags, len(header_bytes)) + header_bytes + payload
    body = _PREAMBLE.pack(FORMAT_VERSION, flags | FLAG_TAGGED, len(header_bytes)) + header_bytes + payload
    return body + keys.tag(namespace, digest, body)


def _zstd_decompress(payload: bytes) -> bytes:
    try:
        return bytes(_zstd().ZstdDecompressor().decompress(payload, max_output_size=_MAX_PAYLOAD))
    except Exception as exc:  # zstandard.ZstdError, without importing zstandard up front
        raise CodecError(f"corrupt zstd payload: {exc}") from exc


def _zstd() -> Any:
    import zstandard  # deferred: only models that choose zstd load it

    return zstandard


def decode(
    raw: bytes, *, keys: ValueKeys | None = None, namespace: str = "", digest: str = ""
) -> CachedPrediction:
    """Parse a stored value, raising :class:`CodecError` for anything unexpected.

    With ``keys``, the value must carry a tag that verifies as the entry ``digest`` of
    ``namespace`` (else :class:`IntegrityError`, before anything is parsed). Without, a tag is
    not checked.
    """
    if len(raw) < _PREAMBLE.size:
        raise CodecError("value shorter than its preamble")
    version, flags, header_length = _PREAMBLE.unpack_from(raw)
    end = len(raw) - TAG_BYTES if flags & FLAG_TAGGED else len(raw)
    if keys is not None:
        if not flags & FLAG_TAGGED:
            raise IntegrityError("the value carries no HMAC tag")
        if end < _PREAMBLE.size or not keys.verifies(namespace, digest, raw[:end], raw[end:]):
            raise IntegrityError("the value's HMAC tag does not verify")
    if version != FORMAT_VERSION:
        raise CodecError(f"unknown value format version {version}")
    header_end = _PREAMBLE.size + header_length
    if header_end > end:
        raise CodecError("header longer than the value")
    try:
        header = orjson.loads(raw[_PREAMBLE.size : header_end])
        payload = raw[header_end:end]
        if flags & FLAG_ZLIB:
            payload = zlib.decompressobj().decompress(payload, _MAX_PAYLOAD)
        elif flags & FLAG_ZSTD:
            payload = _zstd_decompress(payload)
        return CachedPrediction(
            prediction=orjson.loads(payload),
            generation=header["g"],
            created_at=header["t"],
            model_version_id=header["v"],
            deployed_model_id=header["d"],
            fresh_until=header.get("x"),
        )
    except (orjson.JSONDecodeError, zlib.error, KeyError, TypeError) as exc:
        raise CodecError(f"corrupt value: {exc}") from exc


class DecodedEntries:
    """Entries decoded earlier, by digest, given again while the store returns the very same bytes.

    A hit reads its entry from the store every time; what this spares is parsing it (and checking
    its tag): when the bytes equal those decoded last time as the same entry (namespace and
    digest), the entry decoded then is the answer. Decoding and verifying are functions of the
    bytes, the entry's identity and ``keys``, which are fixed for the life of the memory, so this
    can never serve anything the store did not return, nor a value that did not verify. Only
    uncompressed values of at most ``max_value_bytes`` are kept, so the JSON held is at most
    ``max_bytes`` (its Python objects take a few times that); past ``max_entries`` or
    ``max_bytes`` it forgets everything and starts over.

    Thread-safe without a lock: each read and write is one dict call, atomic under the GIL; a
    lost update costs one decode and the byte count is an estimate. The entries are shared by
    the requests that read them, so nothing may change a decoded prediction (nothing does: an
    answer is only serialized).
    """

    def __init__(
        self,
        *,
        keys: ValueKeys | None = None,
        max_entries: int = 10_000,
        max_bytes: int = 1024 * 1024,
        max_value_bytes: int = 4096,
    ) -> None:
        self._keys = keys
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_value_bytes = max_value_bytes
        self._entries: dict[str, tuple[bytes, str, CachedPrediction]] = {}  # digest: raw, namespace, entry
        self._bytes = 0

    @property
    def keys(self) -> ValueKeys | None:
        """The keys values are verified with (read-only: the entries kept were verified with them)."""
        return self._keys

    def decode(self, namespace: str, digest: str, raw: bytes) -> CachedPrediction:
        """:func:`decode` of ``raw``, the stored value of entry ``digest`` of ``namespace``, verified
        with :attr:`keys`; raises :class:`CodecError` (or :class:`IntegrityError`) likewise."""
        known = self._entries.get(digest)
        if known is not None and known[0] == raw and known[1] == namespace:
            return known[2]
        entry = decode(raw, keys=self._keys, namespace=namespace, digest=digest)
        size = len(raw)
        if size <= self.max_value_bytes and not raw[1] & _COMPRESSED:
            if len(self._entries) >= self.max_entries or self._bytes + size > self.max_bytes:
                self._entries, self._bytes, known = {}, 0, None
            self._entries[digest] = (raw, namespace, entry)
            self._bytes += size - (len(known[0]) if known is not None else 0)
        return entry

    def __len__(self) -> int:
        return len(self._entries)


def decode_header(prefix: bytes) -> dict[str, Any]:
    """The metadata of a stored value, read from its first bytes only (the payload is not needed).

    Raises :class:`CodecError` for a value that is not ours or corrupt, and also when
    ``prefix`` stops before the end of the header: read more of the value then. A tag is not
    checked (it is at the end): what reads headers alone (reclaim, refresh-ahead's sweep) decides
    upkeep, never what a client is served.
    """
    if len(prefix) < _PREAMBLE.size:
        raise CodecError("value shorter than its preamble")
    version, _, header_length = _PREAMBLE.unpack_from(prefix)
    if version != FORMAT_VERSION:
        raise CodecError(f"unknown value format version {version}")
    header_end = _PREAMBLE.size + header_length
    if len(prefix) < header_end:
        raise CodecError(f"header cut short: {header_end} bytes needed, {len(prefix)} read")
    try:
        header = orjson.loads(prefix[_PREAMBLE.size : header_end])
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"corrupt header: {exc}") from exc
    if not isinstance(header, dict):
        raise CodecError("the header is not a JSON object")
    return header
