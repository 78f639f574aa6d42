"""When refresh-ahead recomputes a hot entry: at a point spread over the window, never after expiry.

Entries written together (a warm, a burst of traffic) expire together; refreshing them all in
one sweep would load the model in bursts and keep them in lockstep for good. Each entry is
therefore given its own lead: a point drawn uniformly between half the window and the whole
window before its expiry. The draw is a hash of the digest and the entry's creation time, so
every sweep makes the same decision for one entry lifetime (a sweep that comes early or late
changes nothing), and the refreshed entry, created at a spread-out moment, draws anew.

Why a hashed uniform lead and not XFetch's probabilistic early expiration (Vattani et al.
2015): XFetch decides on every read, with a chance that grows as expiry nears, scaled by the
time a recompute takes. Here a periodic sweep decides, at most once a period, so XFetch's
short leads would fall between sweeps and its draws would change from sweep to sweep; a lead
bounded below by half the window guarantees every hot entry a sweep before it expires when
sweeps run at least twice a window, and it needs no measured recompute time.
"""

from __future__ import annotations

import hashlib
from typing import Any

DUE, NOT_DUE, COLD, GONE = "due", "not due", "cold", "gone"
_UNIT = float(2**64)


def refresh_lead(window: float, digest: str, created_at: float) -> float:
    """Seconds before its expiry at which this entry lifetime is due: in ``(window / 2, window]``."""
    draw = hashlib.blake2b(f"{digest}/{created_at!r}".encode(), digest_size=8).digest()
    return window * (1 - int.from_bytes(draw, "big") / _UNIT / 2)


def refresh_decision(
    *,
    header: dict[str, Any],
    score: float,
    digest: str,
    now: float,
    window: float,
    max_age: float | None = None,
) -> str:
    """What a sweep at ``now`` does with a servable entry (its decoded header) of hot-set ``score``.

    GONE: fresh no more (expired or stale: a request recomputes it). COLD: not requested since
    it was written (the hot score is below its creation time), so it is left to expire.
    DUE: within its lead of expiry: recompute it now. NOT_DUE: a later sweep will. An entry
    expires at its fresh-until time, or earlier at the model's ``max_age``.
    """
    created_at, fresh_until = header.get("t"), header.get("x")
    if not isinstance(created_at, int | float) or not isinstance(fresh_until, int | float):
        return GONE  # written before entries had an expiry in their header: never refreshed
    if max_age is not None:
        fresh_until = min(fresh_until, created_at + max_age)
    if fresh_until <= now:
        return GONE
    if score < created_at:
        return COLD
    if fresh_until - now > refresh_lead(window, digest, created_at):
        return NOT_DUE
    return DUE
