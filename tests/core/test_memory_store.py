"""The in-memory store passes the store contract, and keeps TTLs against its clock."""

from __future__ import annotations

from caching.core.memory_store import MemoryPredictionStore
from caching.core.sentinels import NO_VALUE
from caching.core.store import Fresh, PredictionStore
from tests.core.store_contract import StoreContract, value

NAMESPACE = "pc{t.m1}"


class TestMemoryStore(StoreContract):
    def make_store(self) -> PredictionStore:
        return MemoryPredictionStore()


def test_entries_and_locks_expire_by_the_stores_clock():
    now = [1000.0]
    store = MemoryPredictionStore(clock=lambda: now[0])
    lookup = store.lookup(NAMESPACE, "", ["a"])
    store.save(NAMESPACE, lookup, [Fresh("a", value(lookup.generation), 60)])
    assert store.acquire(NAMESPACE, ["b"], "t", 61) == {"b"}
    now[0] += 59
    assert store.lookup(NAMESPACE, "", ["a"]).raw_values[0] is not NO_VALUE
    assert store.waiting_state(NAMESPACE, ["b"]).held == {"b"}
    now[0] += 2
    assert store.lookup(NAMESPACE, "", ["a"]).raw_values[0] is NO_VALUE
    assert store.waiting_state(NAMESPACE, ["b"]).held == frozenset()
