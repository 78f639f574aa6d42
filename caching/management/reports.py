"""Plain-text reports of the operator CLI: aligned tables and label/value lists an operator reads."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import orjson

# The summary columns of `predcache stats`: (header, the stats field or a derived one).
SUMMARY_COLUMNS = (
    ("MODEL", "model"),
    ("REQUESTS", "requests"),
    ("HIT RATIO", "hit_ratio"),
    ("HITS", "hits"),
    ("MISSES", "misses"),
    ("BACKEND CALLS", "backend_calls"),
    ("CALLS SAVED", "backend_calls_saved"),
    ("TIME SAVED", "backend_seconds_saved"),
    ("VERSION", "version"),
)

# Every field of one model's stats, in reading order, with the words an operator uses.
STATS_LABELS = (
    ("model", "model"),
    ("requests", "requests"),
    ("hit_ratio", "hit ratio (of instances looked up)"),
    ("hits", "instances served from the cache"),
    ("l1_hits", "of those, from the in-process tier (L1)"),
    ("misses", "instances computed by the model"),
    ("bypassed", "instances passed through (cache bypassed)"),
    ("cached_requests", "requests answered from the cache alone"),
    ("cached_us", "time answering them (read-through)"),
    ("computed_requests", "requests that called the model"),
    ("computed_us", "time answering them (read-through)"),
    ("backend_calls", "backend calls"),
    ("backend_instances", "instances sent to the backend"),
    ("backend_answered", "instances the backend answered"),
    ("backend_us", "backend time answering them"),
    ("backend_ms_per_instance", "backend time per instance"),
    ("backend_calls_saved", "backend calls saved (~ requests - calls)"),
    ("backend_seconds_saved", "backend time saved (~ hits * time per instance)"),
    ("single_flight_waits", "instances waited for (another request computing)"),
    ("single_flight_timeouts", "waits that gave up and computed"),
    ("revalidations", "background refreshes (stale-while-revalidate)"),
    ("hot_samples", "hits sampled for the hot set (refresh-ahead)"),
    ("refresh_runs", "refresh-ahead sweeps"),
    ("refresh_hot", "hot entries found by the sweeps"),
    ("refreshed", "hot entries refreshed ahead of expiry"),
    ("refresh_not_due", "hot entries not yet due for a refresh"),
    ("refresh_errors", "hot entries the model failed to refresh"),
    ("refresh_cold", "cold entries left to expire"),
    ("refresh_gone", "hot-set entries already expired or purged"),
    ("stale_if_error", "stale instances served on model errors"),
    ("breaker_rejections", "calls refused by an open circuit breaker"),
    ("not_admitted", "predictions not stored yet (admission)"),
    ("too_large", "predictions too large to store"),
    ("not_stored", "predictions not stored"),
    ("store_errors", "failed writes to Redis"),
    ("decode_errors", "entries that could not be decoded"),
    ("integrity_failures", "entries whose HMAC tag did not verify"),
    ("version", "version followed"),
    ("retired_versions", "retired versions"),
    ("version_changes", "version changes"),
    ("last_version_change", "last version change"),
    ("generation", "generation"),
)


def shown(field: str, value: Any) -> str:
    """One value as an operator reads it: ratios in percent, times with their unit, ``-`` for none."""
    if value is None or value == "" or value == []:
        return "-"
    if field == "hit_ratio":
        return f"{value * 100:.1f}%"
    if field == "backend_seconds_saved":
        return f"{value:,.3f} s"
    if field in ("backend_us", "cached_us", "computed_us"):
        return f"{value / 1_000_000:,.3f} s"
    if field == "backend_ms_per_instance":
        return f"{value:,.3f} ms"
    if field == "last_version_change":
        return f"{value['previous_version'] or '-'} -> {value['version']} at {value['observed_at']}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, right_aligned: Collection[int] | None = None
) -> str:
    """Columns padded to their widest cell; ``right_aligned`` ones (default: all but the first) right."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    right = set(range(1, len(headers))) if right_aligned is None else set(right_aligned)

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def stats_summary(all_stats: Sequence[dict[str, Any]]) -> str:
    """One line per model: requests, hit ratio, and what the cache saved."""
    headers = [header for header, _ in SUMMARY_COLUMNS]
    rows = [[shown(field, stats.get(field)) for _, field in SUMMARY_COLUMNS] for stats in all_stats]
    return table(headers, rows)


def labelled(pairs: Sequence[tuple[str, str]]) -> str:
    """``label  value`` lines, the values aligned."""
    width = max(len(label) for label, _ in pairs)
    return "\n".join(f"{label.ljust(width)}  {value}".rstrip() for label, value in pairs)


def stats_detail(stats: dict[str, Any]) -> str:
    """Every counter and state of one model, labelled."""
    return labelled([(label, shown(field, stats.get(field))) for field, label in STATS_LABELS])


def model_detail(described: dict[str, Any]) -> str:
    """A model's settings, then its policy's, as ``field  value`` lines."""
    policy = described["policy"]
    pairs = [(field, _setting(value)) for field, value in described.items() if field != "policy"]
    pairs += [(f"policy.{field}", _setting(value)) for field, value in policy.items()]
    return labelled(pairs)


def _setting(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)
