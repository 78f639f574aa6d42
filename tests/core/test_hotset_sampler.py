"""The hit path's hot-key sampler, the refresh spread and the pacer: plain Python, no Redis."""

from __future__ import annotations

import random
import statistics
import threading

import pytest

from caching.core.hotset import HOT_INSTANCE_MAX_BYTES, HotSampler
from caching.core.refresh import COLD, DUE, GONE, NOT_DUE, refresh_decision, refresh_lead


def offer(sampler: HotSampler, digests: list[str], namespace: str = "m1", parameters=None) -> int:
    positions = {digest: index for index, digest in enumerate(digests)}
    return sampler.offer(namespace, digests, positions, [[d] for d in digests], parameters)


def test_one_in_n_hits_is_sampled_with_a_seeded_random():
    sampler = HotSampler(one_in=10, rng=random.Random(7))
    sampled = sum(offer(sampler, ["a"]) for _ in range(10_000))
    assert 900 <= sampled <= 1100
    assert sampler.pending("m1") == {"a": sampled}


class FixedDraw:
    """A random source whose every draw makes the sampler pass over exactly two hits at 1 in 2."""

    def random(self) -> float:
        return 0.8  # int(log(1 - 0.8) / log(1 - 1/2)) == 2


def test_the_hits_between_samples_are_counted_across_requests_and_within_batches():
    sampler = HotSampler(one_in=2, rng=FixedDraw())  # type: ignore[arg-type]
    assert offer(sampler, ["a", "b"]) == 0  # the two passed over
    assert offer(sampler, ["c"]) == 1  # the third hit
    assert offer(sampler, ["d", "e", "f", "g", "h", "i", "j"]) == 2  # its f and i
    assert offer(sampler, ["k"]) == 0
    assert offer(sampler, ["l", "m"]) == 1  # l: the third after i
    assert sampler.pending("m1") == {"c": 1, "f": 1, "i": 1, "l": 1}


def test_hits_in_batches_are_sampled_at_the_same_rate_each():
    sampler = HotSampler(one_in=10, rng=random.Random(11))
    batch = [f"d{n}" for n in range(7)]
    sampled = sum(offer(sampler, batch) for _ in range(2_000))
    assert 1_260 <= sampled <= 1_540  # 14,000 hits, 1 in 10
    counts = sampler.pending("m1")
    assert set(counts) == set(batch)  # every position in a batch gets its samples
    assert sum(counts.values()) == sampled


def test_every_hit_is_sampled_at_one_in_one_and_none_when_off():
    every = HotSampler(one_in=1)
    assert offer(every, ["a", "b", "a"]) == 3
    assert every.pending("m1") == {"a": 2, "b": 1}
    off = HotSampler(one_in=0)
    assert not off.enabled
    assert offer(off, ["a"]) == 0
    assert off.pending("m1") == {}


def test_models_are_counted_apart():
    sampler = HotSampler(one_in=1)
    offer(sampler, ["a"], namespace="m1")
    offer(sampler, ["a", "b"], namespace="m2")
    assert sampler.pending("m1") == {"a": 1}
    assert sampler.pending("m2") == {"a": 1, "b": 1}


def test_pending_memory_is_bounded_per_model_and_in_bytes():
    sampler = HotSampler(one_in=1, pending_per_model=3)
    offer(sampler, [f"d{i}" for i in range(10)])
    offer(sampler, ["d0"])  # known digests still count
    assert sampler.pending("m1") == {"d0": 2, "d1": 1, "d2": 1}
    assert sampler.dropped == 7

    small = HotSampler(one_in=1, pending_bytes=100)
    offer(small, [f"digest-{i}" for i in range(10)])
    assert 0 < len(small.pending("m1")) < 10


def test_an_oversized_instance_is_not_sampled():
    sampler = HotSampler(one_in=1)
    big = "x" * (HOT_INSTANCE_MAX_BYTES + 1)
    assert sampler.offer("m1", ["big", "small"], {"big": 0, "small": 1}, [big, "s"], None) == 1
    assert sampler.pending("m1") == {"small": 1}


def test_concurrent_offers_lose_no_count():
    sampler = HotSampler(one_in=1)

    def hits() -> None:
        for _ in range(2_000):
            offer(sampler, ["a", "b"])

    threads = [threading.Thread(target=hits) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sampler.pending("m1") == {"a": 16_000, "b": 16_000}


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        HotSampler(one_in=-1)
    with pytest.raises(ValueError):
        HotSampler(one_in=1, half_life=0)


# --- spreading refreshes over the window ---------------------------------------------------------


def test_entries_written_together_get_leads_spread_over_the_second_half_of_the_window():
    window = 100.0
    leads = [refresh_lead(window, f"{i:032x}", 1_000.0) for i in range(2_000)]
    assert all(window / 2 < lead <= window for lead in leads)
    # Uniform over (50, 100]: ten bins of five seconds hold about 200 each.
    bins = [0] * 10
    for lead in leads:
        bins[min(9, int((lead - 50) // 5))] += 1
    assert min(bins) > 140 and max(bins) < 260, bins
    assert 73 < statistics.mean(leads) < 77


def test_a_lead_is_fixed_for_one_entry_lifetime_and_drawn_anew_for_the_next():
    assert refresh_lead(60, "d", 10.0) == refresh_lead(60, "d", 10.0)
    assert len({refresh_lead(60, "d", 10.0 + i) for i in range(50)}) == 50


def test_sweeps_spread_a_batch_written_together_and_miss_none_before_expiry():
    """1000 entries written at t=0, fresh for 100 s, window 40 s, sweeps every 10 s (window / 4)."""
    window, period, fresh_until = 40.0, 10.0, 100.0
    header = {"t": 0.0, "x": fresh_until}
    refreshed_at: dict[str, float] = {}
    for sweep in range(10):
        now = sweep * period
        for i in range(1_000):
            digest = f"{i:032x}"
            if digest not in refreshed_at:
                decision = refresh_decision(header=header, score=5.0, digest=digest, now=now, window=window)
                if decision == DUE:
                    refreshed_at[digest] = now
    assert len(refreshed_at) == 1_000  # every hot entry, before its expiry
    # Leads in (20, 40] make entries due from t=60 to t=80: the sweeps at 70 and 80 share them.
    per_sweep = {moment: list(refreshed_at.values()).count(moment) for moment in set(refreshed_at.values())}
    assert set(per_sweep) == {70.0, 80.0}, per_sweep
    assert all(400 < count < 600 for count in per_sweep.values()), per_sweep


def test_cold_gone_and_not_due_entries_are_left_alone():
    header = {"t": 100.0, "x": 200.0}

    def decide(**changes):
        arguments = {"header": header, "score": 150.0, "digest": "d", "now": 195.0, "window": 30.0}
        return refresh_decision(**{**arguments, **changes})

    assert decide() == DUE
    assert decide(score=99.0) == COLD  # not requested since it was written
    assert decide(now=150.0) == NOT_DUE  # 50 s left, more than any lead of a 30 s window
    assert decide(now=200.0) == GONE
    assert decide(header={"t": 100.0}) == GONE  # no expiry in its header
    assert decide(now=150.0, max_age=55.0) == DUE  # the model's max age ends it at 155
