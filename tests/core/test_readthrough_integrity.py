"""The read-through with HMAC keys, over the in-memory store: forged values are misses, never served."""

from __future__ import annotations

from caching.core.codec import CachedPrediction, encode
from caching.core.integrity import ValueKeys
from caching.core.store import Fresh
from tests.core.readthrough_support import Model, make_cache, spec

ECHO = spec()
KEYS, OLD_KEYS = ValueKeys(b"n" * 32), ValueKeys(b"o" * 32)


def forge(setup, digest: str, prediction, *, keys: ValueKeys | None = None, handoff: bool = False) -> None:
    """Write a well-formed value of the current generation, as someone with Redis access could."""
    lookup = setup.store.lookup(ECHO.namespace, "", [digest])
    now = setup.clock.now
    entry = CachedPrediction(prediction, lookup.generation, now, None, None, now + 60)
    value = encode(entry, keys=keys, namespace=ECHO.namespace, digest=digest)
    # admit_after above the misses so far: the value is handed off to waiters, not stored.
    setup.store.save(ECHO.namespace, lookup, [Fresh(digest, value, 60)], admit_after=99 if handoff else 1)


def test_a_forged_entry_is_a_counted_miss_and_the_recomputed_answer_replaces_it():
    setup, model = make_cache(value_keys=KEYS), Model()
    [digest] = setup.cache.instance_digests(ECHO, [[1]], None)
    assert setup.cache.predict(ECHO, model, [[1]], None).cache_status == "MISS"
    assert setup.cache.predict(ECHO, model, [[1]], None).cache_status == "HIT"

    for forger_key in (None, ValueKeys(b"x" * 32)):  # untagged, then tagged under another key
        forge(setup, digest, {"echo": "forged"}, keys=forger_key)
        answer = setup.cache.predict(ECHO, model, [[1]], None)
        assert answer.cache_status == "MISS" and answer.predictions == [{"echo": [1], "v": None}]
        again = setup.cache.predict(ECHO, model, [[1]], None)  # the recompute overwrote it
        assert again.cache_status == "HIT" and again.predictions == answer.predictions
    assert len(model.calls) == 3
    counts = setup.stats.pending(ECHO.namespace)
    assert counts["integrity_failures"] == 2 and "decode_errors" not in counts


def test_a_genuine_value_copied_under_another_instance_is_not_served():
    setup, model = make_cache(value_keys=KEYS), Model()
    [one, two] = setup.cache.instance_digests(ECHO, [[1], [2]], None)
    setup.cache.predict(ECHO, model, [[1], [2]], None)
    [value_of_one] = setup.store.lookup(ECHO.namespace, "", [one]).raw_values
    lookup = setup.store.lookup(ECHO.namespace, "", [two])
    setup.store.save(ECHO.namespace, lookup, [Fresh(two, value_of_one, 60)])

    answer = setup.cache.predict(ECHO, model, [[1], [2]], None)
    assert (answer.cache_status, answer.hits, answer.misses) == ("PARTIAL", 1, 1)
    assert [p["echo"] for p in answer.predictions] == [[1], [2]]
    assert setup.stats.pending(ECHO.namespace)["integrity_failures"] == 1


def test_a_waiter_takes_a_genuine_handoff_and_never_a_forged_one():
    setup, model = make_cache(value_keys=KEYS), Model()
    [digest] = setup.cache.instance_digests(ECHO, [[4]], None)
    setup.store.acquire(ECHO.namespace, [digest], "other", 30)

    def the_other_request_hands_off():  # another process computing, its answer not yet admitted
        setup.store.release(ECHO.namespace, [digest], "other")
        other = make_cache(clock=setup.clock, store=setup.store, value_keys=KEYS)
        other.cache.predict(spec(admit_after=5), Model(), [[4]], None)

    setup.on_sleep.append(the_other_request_hands_off)
    answer = setup.cache.predict(ECHO, model, [[4]], None)
    assert answer.predictions == [{"echo": [4], "v": None}] and model.calls == []

    # A forged handoff while another request holds the lock: the waiter waits out its bound and
    # computes itself; the forged value is counted once however often it was re-read.
    [forged_digest] = setup.cache.instance_digests(ECHO, [[5]], None)
    forge(setup, forged_digest, {"echo": "forged"}, handoff=True)
    setup.store.acquire(ECHO.namespace, [forged_digest], "stuck", 30)
    answer = setup.cache.predict(ECHO, model, [[5]], None)
    assert answer.predictions == [{"echo": [5], "v": None}] and model.calls == [[[5]]]
    assert len(setup.sleeps) > 3
    counts = setup.stats.pending(ECHO.namespace)
    assert counts["integrity_failures"] == 1 and counts["single_flight_timeouts"] == 1


def test_rotation_serves_entries_of_the_old_key_until_it_is_dropped():
    before = make_cache(value_keys=OLD_KEYS)
    before.cache.predict(ECHO, Model(), [[1], [2]], None)

    rotating = make_cache(clock=before.clock, store=before.store, value_keys=ValueKeys(b"n" * 32, b"o" * 32))
    model = Model()
    assert rotating.cache.predict(ECHO, model, [[1]], None).cache_status == "HIT"
    assert rotating.cache.predict(ECHO, model, [[2], [3]], None).cache_status == "PARTIAL"
    assert rotating.stats.pending(ECHO.namespace).get("integrity_failures", 0) == 0

    after = make_cache(clock=before.clock, store=before.store, value_keys=KEYS)  # the old key dropped
    answer = after.cache.predict(ECHO, Model(), [[1], [3]], None)
    assert (answer.hits, answer.misses) == (1, 1)  # [3] was written under the new key, [1] was not
    assert after.stats.pending(ECHO.namespace)["integrity_failures"] == 1


def test_without_keys_values_written_with_them_are_still_served():
    tagged = make_cache(value_keys=KEYS)
    tagged.cache.predict(ECHO, Model(), [[1]], None)
    plain = make_cache(clock=tagged.clock, store=tagged.store)
    assert plain.cache.predict(ECHO, Model(), [[1]], None).cache_status == "HIT"
