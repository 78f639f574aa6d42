"""Integrity of stored values: an HMAC-SHA256 tag binds each value to its entry; one old key is accepted.

With a key set, everything predcache writes to an entry ends with a tag over the entry's identity
(its model namespace and instance digest) and the value's bytes before the tag (see
:mod:`caching.core.codec`); a value whose tag does not verify is a miss. So whoever can write to
Redis without holding the key cannot have a client served a prediction the model did not make:
not a forged value, not a genuine one copied under another entry, not one written before the key
was set. The tag binds the identity rather than the Redis key's name because a save writes the
same bytes either to the entry or, until the entry is admitted, to its handoff key for the
requests waiting on it, and both must verify.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the codec imports this module: it stays free of the store and its client
    from caching.core.stats import StatsRecorder

logger = logging.getLogger(__name__)

TAG_BYTES = 32  # HMAC-SHA256
_DOMAIN = b"predcache value 1\n"  # keeps these tags apart from anything else made with the key


class ValueKeys:
    """The key that tags every value written, and the keys a tag may verify under (rotation).

    ``old_key`` is accepted for reading only: during a rotation, values written under it keep
    being served until they expire or are rewritten under ``key``.
    """

    __slots__ = ("_accepted", "_writer")

    def __init__(self, key: bytes, old_key: bytes = b"") -> None:
        if not key:
            raise ValueError("an HMAC key must not be empty")
        keys = (key, old_key) if old_key and old_key != key else (key,)
        # Keyed once: a copy per tag spares setting the key up again (about half the cost).
        self._accepted = tuple(hmac.new(each, digestmod=hashlib.sha256) for each in keys)
        self._writer = self._accepted[0]

    def tag(self, namespace: str, digest: str, body: bytes) -> bytes:
        """The tag of ``body`` (a value up to its tag) as the entry ``digest`` of ``namespace``."""
        return _tag(self._writer, _identity(namespace, digest), body)

    def verifies(self, namespace: str, digest: str, body: bytes, tag: bytes) -> bool:
        """Whether ``tag`` is ``body``'s under the key or the old one (each compared in constant time)."""
        identity = _identity(namespace, digest)
        return any(hmac.compare_digest(_tag(keyed, identity, body), tag) for keyed in self._accepted)

    def __repr__(self) -> str:
        return f"ValueKeys(<{len(self._accepted)} key(s) hidden>)"


def _identity(namespace: str, digest: str) -> bytes:
    # The namespace's length first: no other (namespace, digest) pair gives the same bytes.
    return b"%s%d:%s:%s:" % (_DOMAIN, len(namespace), namespace.encode(), digest.encode())


def _tag(keyed: hmac.HMAC, identity: bytes, body: bytes) -> bytes:
    mac = keyed.copy()
    mac.update(identity)
    mac.update(body)
    return mac.digest()


class IntegrityFailures:
    """Counts values that failed verification (stats and metrics) and warns of them in the log,
    once per ``warn_every`` seconds per model at most, with how many failed since the last warning."""

    def __init__(
        self,
        stats: StatsRecorder,
        *,
        warn_every: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = stats
        self.warn_every = warn_every
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._warned: dict[str, tuple[float, int]] = {}  # namespace -> (last warning, failures since)

    def failed(self, namespace: str, model_name: str, count: int) -> None:
        """``count`` values of the model failed verification: they were treated as misses."""
        self.stats.record(namespace, integrity_failures=count)
        now = self._monotonic()
        with self._lock:
            last, unreported = self._warned.get(namespace, (-float("inf"), 0))
            unreported += count
            if now - last < self.warn_every:
                self._warned[namespace] = (last, unreported)
                return
            self._warned[namespace] = (now, 0)
        logger.warning(
            "%d cached value(s) of %s failed their HMAC check (forged, copied from another entry, or "
            "written without the key): treated as misses and recomputed",
            unreported,
            model_name,
        )
