"""The contract every PredictionStore passes: subclass StoreContract and give ``make_store``.

Time is the store's own business (Redis keeps its own clock): the suite never waits on a TTL,
it reads what a store reports (locks, hand-offs, entries) right after each call.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from caching.core.codec import FLAG_TAGGED, CachedPrediction, decode, encode
from caching.core.integrity import ValueKeys
from caching.core.sentinels import NO_VALUE
from caching.core.store import ADVANCED, STORED, SUPERSEDED, Fresh, LockRequest, PredictionStore


def value(
    generation: str,
    *,
    fresh_for: float = 300,
    version: str | None = None,
    prediction: Any = 1,
    keys: ValueKeys | None = None,
    namespace: str = "",
    digest: str = "",
) -> bytes:
    now = time.time()
    entry = CachedPrediction(prediction, generation, now, version, None, now + fresh_for)
    return encode(entry, keys=keys, namespace=namespace, digest=digest)


def locks(
    token: str = "t1", *, follow: bool = False, every: bool = False, now: float | None = None
) -> LockRequest:
    return LockRequest(token, 30, time.time() if now is None else now, follow, every_entry=every)


class StoreContract:
    """One suite for every store; subclasses define ``make_store``."""

    namespace_prefix = "pc"

    @pytest.fixture(autouse=True)
    def _namespace(self) -> None:
        self.ns = f"{self.namespace_prefix}{uuid.uuid4().hex[:8]}{{t.m1}}"

    def make_store(self) -> PredictionStore:
        raise NotImplementedError

    def stored(self, store: PredictionStore, digests: list[str], **options: Any) -> str:
        """Save fresh entries of ``digests``; returns the generation they carry."""
        lookup = store.lookup(self.ns, "", digests)
        fresh = [Fresh(d, value(lookup.generation, **options), 300) for d in digests]
        store.save(self.ns, lookup, fresh)
        return lookup.generation

    def test_a_missing_entry_is_no_value(self) -> None:
        lookup = self.make_store().lookup(self.ns, "", ["a", "b"])
        assert list(lookup.raw_values) == [NO_VALUE, NO_VALUE]
        assert lookup.current_version == ""
        assert len(lookup.new_generation_keys) == 2

    def test_saved_entries_are_read_back_with_their_generation(self) -> None:
        store = self.make_store()
        generation = self.stored(store, ["a"])
        lookup = store.lookup(self.ns, "", ["a", "b"])
        assert lookup.generation == generation and lookup.new_generation_keys == ()
        assert lookup.raw_values[0] != NO_VALUE and lookup.raw_values[1] is NO_VALUE

    def test_a_purge_swaps_the_generation(self) -> None:
        store = self.make_store()
        generation = self.stored(store, ["a"])
        store.purge(self.ns)
        assert store.lookup(self.ns, "", ["a"]).generation != generation
        assert store.generation(self.ns) == store.lookup(self.ns, "", []).generation.split(".")[0]

    def test_a_version_purge_swaps_only_that_versions_generation(self) -> None:
        store = self.make_store()
        before_v1 = store.lookup(self.ns, "v1", []).generation
        store.save(self.ns, store.lookup(self.ns, "v1", []), [])
        store.save(self.ns, store.lookup(self.ns, "v2", []), [])
        before_v1, before_v2 = (store.lookup(self.ns, v, []).generation for v in ("v1", "v2"))
        store.purge(self.ns, "v1")
        assert store.lookup(self.ns, "v1", []).generation != before_v1
        assert store.lookup(self.ns, "v2", []).generation == before_v2

    def test_versions_are_followed_and_retired(self) -> None:
        store = self.make_store()
        first = store.save(self.ns, store.lookup(self.ns, "", []), [], version="a/1", follow_versions=True)
        assert (first.status, first.previous_version) == (ADVANCED, "")
        second = store.save(self.ns, store.lookup(self.ns, "", []), [], version="b/2", follow_versions=True)
        assert (second.status, second.previous_version) == (ADVANCED, "a/1")
        lookup = store.lookup(self.ns, "", ["x"])
        late = store.save(
            self.ns,
            lookup,
            [Fresh("x", value(lookup.generation), 300)],
            version="a/1",
            follow_versions=True,
        )
        assert (late.status, late.stored) == (SUPERSEDED, 0)
        assert store.lookup(self.ns, "", []).current_version == "b/2"
        assert store.followed_version(self.ns) == ("b/2", ["a/1"])
        store.purge(self.ns)
        assert store.followed_version(self.ns) == ("", [])

    def test_a_lookup_with_locks_locks_what_it_must_compute(self) -> None:
        store = self.make_store()
        generation = self.stored(store, ["fresh"])
        self.stored(store, ["stale"], fresh_for=-5)
        lookup = store.lookup(self.ns, "", ["fresh", "stale", "absent"], locks=locks())
        assert lookup.locked == {"stale", "absent"} and lookup.held == frozenset()
        again = store.lookup(self.ns, "", ["fresh", "stale", "absent"], locks=locks("t2"))
        assert again.locked == frozenset() and again.held == {"stale", "absent"}
        assert lookup.generation == generation

    def test_a_lookup_with_locks_locks_purged_and_other_version_entries(self) -> None:
        store = self.make_store()
        lookup = store.lookup(self.ns, "", ["old", "v1", "v2"])
        store.save(
            self.ns,
            lookup,
            [Fresh("old", value(lookup.generation), 300)],
            version="dm/2",
            follow_versions=True,
        )
        store.purge(self.ns, keep_versions=True)
        lookup = store.lookup(self.ns, "", ["v1", "v2"])
        fresh = [
            Fresh("v1", value(lookup.generation, version="1"), 300),
            Fresh("v2", value(lookup.generation, version="2"), 300),
        ]
        store.save(self.ns, lookup, fresh)  # written directly: a v1 entry beside a v2 one
        store.save(self.ns, store.lookup(self.ns, "", []), [], version="/2", follow_versions=True)
        taken = store.lookup(self.ns, "", ["old", "v1", "v2"], locks=locks(follow=True))
        assert taken.locked == {"old", "v1"}
        assert store.lookup(self.ns, "", ["v2"], locks=locks(every=True)).locked == {"v2"}

    def test_a_lost_generation_key_locks_every_entry(self) -> None:
        store = self.make_store()
        self.stored(store, ["a"])
        store.purge(self.ns, "")  # the version generation is swapped: "a" is of another one now
        assert store.lookup(self.ns, "", ["a"], locks=locks()).locked == {"a"}

    def test_acquire_takes_only_free_locks_and_release_frees_only_its_own(self) -> None:
        store = self.make_store()
        assert store.acquire(self.ns, ["a", "b"], "t1", 30) == {"a", "b"}
        assert store.acquire(self.ns, ["b", "c"], "t2", 30) == {"c"}
        store.release(self.ns, ["a", "b", "c"], "t2")
        assert store.waiting_state(self.ns, ["a", "b", "c"]).held == {"a", "b"}
        store.release(self.ns, ["a", "b"], "t1")
        assert store.waiting_state(self.ns, ["a", "b", "c"]).held == frozenset()

    def test_a_save_with_a_token_stores_only_under_its_locks_and_releases_them(self) -> None:
        store = self.make_store()
        lookup = store.lookup(self.ns, "", ["a", "b"], locks=locks("t1"))
        store.delete_entries(self.ns, ["b"])  # an instance purge deletes b's lock
        fresh = [Fresh(d, value(lookup.generation), 300) for d in ("a", "b")]
        outcome = store.save(self.ns, lookup, fresh, lock_token="t1")
        assert (outcome.status, outcome.stored) == (STORED, 1)
        after = store.lookup(self.ns, "", ["a", "b"])
        assert after.raw_values[0] != NO_VALUE and after.raw_values[1] is NO_VALUE
        assert store.waiting_state(self.ns, ["a", "b"]).held == frozenset()

    def test_admission_hands_off_until_an_instance_missed_often_enough(self) -> None:
        store = self.make_store()
        for attempt in (1, 2):
            lookup = store.lookup(self.ns, "", ["a"])
            saved = store.save(self.ns, lookup, [Fresh("a", value(lookup.generation), 300)], admit_after=2)
            assert saved.stored == attempt - 1
        assert store.lookup(self.ns, "", ["a"]).raw_values[0] != NO_VALUE

    def test_a_value_not_yet_admitted_is_handed_off_to_waiters(self) -> None:
        store = self.make_store()
        lookup = store.lookup(self.ns, "", ["a"], locks=locks("t1"))
        computed = value(lookup.generation)
        store.save(self.ns, lookup, [Fresh("a", computed, 300)], admit_after=5, lock_token="t1")
        state = store.waiting_state(self.ns, ["a"])
        assert state.handed == {"a": computed} and state.held == frozenset()

    def test_a_generation_made_up_by_two_requests_keeps_only_the_first(self) -> None:
        store = self.make_store()
        first, second = (store.lookup(self.ns, "", ["a"]) for _ in range(2))
        store.save(self.ns, first, [])
        outcome = store.save(self.ns, second, [Fresh("a", value(second.generation), 300)])
        assert outcome.stored == 0
        assert store.lookup(self.ns, "", []).generation == first.generation

    def test_tagged_values_are_judged_by_their_header_as_untagged_ones_are(self) -> None:
        # The tag ends the value: the lookup's locking rule (a Lua script on Redis) and header
        # reads find the header where it always was.
        store, keys = self.make_store(), ValueKeys(b"k" * 32)
        lookup = store.lookup(self.ns, "", ["fresh", "stale"])
        fresh = [
            Fresh(d, value(lookup.generation, fresh_for=f, keys=keys, namespace=self.ns, digest=d), 300)
            for d, f in (("fresh", 300), ("stale", -5))
        ]
        store.save(self.ns, lookup, fresh)
        taken = store.lookup(self.ns, "", ["fresh", "stale"], locks=locks())
        assert taken.locked == {"stale"}
        assert [h and h["g"] for h in store.entry_headers(self.ns, ["fresh", "stale"])] == [
            lookup.generation
        ] * 2
        raw = taken.raw_values[0]
        assert isinstance(raw, bytes) and raw == fresh[0].value and raw[1] & FLAG_TAGGED
        assert decode(raw, keys=keys, namespace=self.ns, digest="fresh").generation == lookup.generation

    def test_delete_entries_counts_what_existed(self) -> None:
        store = self.make_store()
        self.stored(store, ["a", "b"])
        assert store.delete_entries(self.ns, ["a", "a", "z"]) == 1
        assert store.lookup(self.ns, "", ["a"]).raw_values[0] is NO_VALUE

    def test_headers_and_reclaim_read_headers_only(self) -> None:
        store = self.make_store()
        generation = self.stored(store, ["a", "b"])
        [header, missing] = store.entry_headers(self.ns, ["a", "z"])
        assert header is not None and header["g"] == generation and missing is None
        assert store.reclaim(self.ns, lambda header: False) == 2
        assert store.entry_headers(self.ns, ["a", "b"]) == [None, None]

    def test_job_locks(self) -> None:
        store = self.make_store()
        assert store.job_lock(self.ns, "warm", "task-1:a", 30)
        assert not store.job_lock(self.ns, "warm", "task-2:a", 30)
        assert store.job_lock(self.ns, "warm", "task-1:b", 30, take_over="task-1:")
        assert store.job_lock_held(self.ns, "warm", "task-1:b")
        store.job_unlock(self.ns, "warm", "task-1:a")  # no longer its holder: nothing happens
        assert store.job_lock_held(self.ns, "warm", "task-1:b")
        store.job_unlock(self.ns, "warm", "task-1:b")
        assert not store.job_lock_held(self.ns, "warm", "task-1:b")
