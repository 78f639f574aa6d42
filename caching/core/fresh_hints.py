"""Which entries this process saw fresh in the store, and until when: the lookup's choice of round trip.

A request whose entries all were fresh at their last sight is sent as a plain MGET (a hit's one
round trip, the cheapest there is); any other is sent as the lookup script that also takes
the locks of what it must compute (a miss's first of two round trips). A hint is only a
guess: an entry purged or evicted since then is found missing by the MGET, and its lock is
taken in a round trip of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from caching.core.codec import CachedPrediction


class FreshHints:
    """Digest -> fresh-until, bounded: past ``max_entries`` it forgets everything and starts over.

    Thread-safe without a lock: each operation is one dict call, atomic under the GIL, and a
    lost update only costs one request the other round-trip choice.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._until: dict[str, float] = {}

    def all_fresh(self, digests: Iterable[str], now: float) -> bool:
        """Whether every digest was seen fresh, and stays so past ``now``."""
        until = self._until.get
        return all(until(digest, 0.0) > now for digest in digests)

    def remember(self, entries: Mapping[str, CachedPrediction]) -> None:
        """Note entries just seen fresh (or stored); those with no freshness limit are not noted."""
        if len(self._until) + len(entries) > self.max_entries:
            self._until = {}
        for digest, entry in entries.items():
            if entry.fresh_until is not None:
                self._until[digest] = entry.fresh_until

    def forget(self, digests: Iterable[str]) -> None:
        """Drop digests found not fresh."""
        until = self._until
        for digest in digests:
            until.pop(digest, None)

    def __len__(self) -> int:
        return len(self._until)
