"""The in-process tier over a real Redis: answers without commands, forgets what Redis says changed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from caching.core.codec import CachedPrediction, encode
from caching.core.keys import KeySpace
from caching.core.l1 import MemoryTier, TieredStore, Tracking, tracked_prefixes
from caching.core.redis_store import RedisPredictionStore
from caching.core.store import CacheUnavailable, Fresh, Lookup, redis_client
from tests.support.processes import RedisServer, wait_until

VERSION = ""


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


class Tiered:
    """A tiered store on ``own_redis`` and a plain client to change keys as another process would."""

    def __init__(self, url: str, *, max_entries: int = 1000, max_bytes: int = 1 << 20) -> None:
        self.client = redis_client(url, socket_timeout=1, connect_timeout=1)
        self.keyspace = KeySpace("t1:", "inst")
        self.namespace = self.keyspace.namespace(1)
        self.redis_store = RedisPredictionStore(self.client, self.keyspace)
        self.tier = MemoryTier(max_entries=max_entries, max_bytes=max_bytes)
        pool = self.client.connection_pool
        self.tracking = Tracking(
            lambda: pool.connection_class(**{**pool.connection_kwargs, "protocol": 3}),
            tracked_prefixes(self.keyspace),
            on_keys=self.tier.forget,
            on_reset=self.tier.clear,
            heartbeat_seconds=0.05,
        )
        self.store = TieredStore(self.redis_store, self.keyspace, self.tier, self.tracking)
        self.other = redis.Redis.from_url(url)  # another process's writes

    def write(self, digest: str, prediction: Any, *, fresh_for: float = 300) -> None:
        lookup = self.redis_store.lookup(self.namespace, VERSION, [digest])
        now = time.time()
        entry = CachedPrediction(prediction, lookup.generation, now, fresh_until=now + fresh_for)
        self.redis_store.save(self.namespace, lookup, [Fresh(digest, encode(entry), int(fresh_for) + 1)])

    def lookup(self, *digests: str) -> Lookup:
        return self.store.lookup(self.namespace, VERSION, list(digests), l1=True)

    def ready(self) -> None:
        """Ask for the model's pushes and wait until the tier may answer for it."""
        self.tracking.want(self.namespace)
        wait_until(lambda: self.tracking.ready(self.namespace), timeout=5, what="L1 tracking")

    def close(self) -> None:
        self.store.close()
        self.other.close()


@pytest.fixture
def tiered(own_redis: RedisServer) -> Iterator[Tiered]:
    tiered = Tiered(own_redis.url)
    yield tiered
    tiered.close()


def commands(client: redis.Redis) -> int:
    """Commands the server has run (INFO's total, which counts INFO itself too)."""
    return int(client.info("stats")["total_commands_processed"])


def prediction_of(lookup: Lookup, index: int = 0) -> Any:
    from caching.core.codec import decode

    value = lookup.raw_values[index]
    assert isinstance(value, bytes)
    return decode(value).prediction


def test_repeated_lookups_are_answered_in_process_with_no_redis_command(tiered: Tiered) -> None:
    tiered.write("a", 1)
    tiered.write("b", 2)
    tiered.ready()
    first = tiered.lookup("a", "b")
    assert not first.from_memory  # read from Redis, and kept

    before = commands(tiered.other)
    for _ in range(1000):
        again = tiered.lookup("a", "b")
        assert again.from_memory
        assert [prediction_of(again, 0), prediction_of(again, 1)] == [1, 2]
        assert again.generation == first.generation
    assert commands(tiered.other) - before <= 1 + 25  # INFO itself, and at most the heartbeats


def test_an_entry_written_elsewhere_is_read_from_redis_at_the_next_lookup(tiered: Tiered) -> None:
    tiered.write("a", "old")
    tiered.ready()
    tiered.lookup("a")
    assert tiered.lookup("a").from_memory

    tiered.write("a", "new")  # another process recomputed it
    after = tiered.lookup("a")
    assert not after.from_memory
    assert prediction_of(after) == "new"
    assert tiered.lookup("a").from_memory and prediction_of(tiered.lookup("a")) == "new"


@pytest.mark.parametrize("how", ["purge", "version purge", "delete entries", "generation deleted", "flushdb"])
def test_every_kind_of_invalidation_reaches_the_tier_before_the_next_lookup(tiered: Tiered, how: str) -> None:
    tiered.write("a", "before")
    tiered.ready()
    kept = tiered.lookup("a")
    assert tiered.lookup("a").from_memory

    if how == "purge":
        tiered.redis_store.purge(tiered.namespace)
    elif how == "version purge":
        tiered.redis_store.purge(tiered.namespace, VERSION)
    elif how == "delete entries":
        tiered.redis_store.delete_entries(tiered.namespace, ["a"])
    elif how == "generation deleted":
        tiered.other.delete(tiered.keyspace.generation(tiered.namespace))
    else:
        tiered.other.flushdb()
    after = tiered.lookup("a")
    assert not after.from_memory
    # Whatever Redis answers now, the entry kept before is not served as it was.
    assert (
        after.generation != kept.generation
        or isinstance(after.raw_values[0], type(None))
        or (after.raw_values[0] != kept.raw_values[0])
    )


def test_a_stale_entry_is_not_kept_in_the_tier(tiered: Tiered) -> None:
    tiered.write("short", "x", fresh_for=0.2)
    tiered.ready()
    assert not tiered.lookup("short").from_memory
    assert tiered.lookup("short").from_memory  # fresh still
    wait_until(lambda: not tiered.lookup("short").from_memory, timeout=5, what="the entry going stale")


def test_the_tier_is_bounded_by_entries_and_bytes_least_recently_used_out(own_redis: RedisServer) -> None:
    tiered = Tiered(own_redis.url, max_entries=3)
    try:
        for digest in "abcd":
            tiered.write(digest, digest)
        tiered.ready()
        for digest in "abc":
            tiered.lookup(digest)
        tiered.lookup("a")  # a is now the most recently used
        tiered.lookup("d")  # d in: b, the least recently used, out
        assert len(tiered.tier) == 3
        assert [tiered.lookup(d).from_memory for d in "acd"] == [True, True, True]
        assert not tiered.lookup("b").from_memory
    finally:
        tiered.close()

    small = Tiered(own_redis.url, max_bytes=2000)  # room for one of these values, not two
    try:
        small.write("big", "x" * 700)
        small.write("other", "y" * 700)
        small.ready()
        small.lookup("big")
        small.lookup("other")
        assert small.tier.bytes <= 2000
        assert len(small.tier) == 1
    finally:
        small.close()


def test_the_tier_serves_nothing_while_redis_is_down_and_resumes_with_tracking(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    tiered = Tiered(own_redis.url)
    again = RedisServer(tmp_path / "again", port=own_redis.port)
    try:
        tiered.write("a", "kept")
        tiered.ready()
        tiered.lookup("a")
        assert tiered.lookup("a").from_memory

        own_redis.stop()
        # The very next lookup sees the closed connection: it goes to Redis, which is down.
        with pytest.raises(CacheUnavailable):
            tiered.lookup("a")
        assert not tiered.tracking.ready(tiered.namespace)

        again.start()  # an empty Redis on the same address
        tiered.write("a", "recomputed")
        wait_until(lambda: tiered.tracking.ready(tiered.namespace), timeout=5, what="tracking again")
        assert len(tiered.tier) == 0  # what was kept under the old connection is gone
        first = tiered.lookup("a")
        assert not first.from_memory and prediction_of(first) == "recomputed"
        assert tiered.lookup("a").from_memory
    finally:
        tiered.close()
        again.stop()


def test_a_change_racing_with_the_read_keeps_nothing(tiered: Tiered) -> None:
    tiered.write("a", "old")
    tiered.ready()
    real_lookup = tiered.redis_store.lookup

    def read_then_changed(*args: Any, **kwargs: Any) -> Lookup:
        found = real_lookup(*args, **kwargs)
        tiered.redis_store.lookup = real_lookup  # type: ignore[method-assign]
        tiered.write("a", "new")  # lands after the read, before the tier keeps what it read
        return found

    tiered.redis_store.lookup = read_then_changed  # type: ignore[method-assign]
    raced = tiered.lookup("a")
    assert prediction_of(raced) == "old"
    after = tiered.lookup("a")
    assert not after.from_memory and prediction_of(after) == "new"


def test_lookups_without_l1_never_touch_the_tier(tiered: Tiered) -> None:
    tiered.write("a", 1)
    for _ in range(3):
        assert not tiered.store.lookup(tiered.namespace, VERSION, ["a"]).from_memory
    assert len(tiered.tier) == 0
    assert not [c for c in tiered.other.client_list() if "t" in c["flags"]]  # no tracking connection
