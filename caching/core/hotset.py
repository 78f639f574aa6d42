"""Which entries are hot: hits sampled in process, flushed with the stats, kept per model in Redis.

The hit path never waits on this: 1 in ``one_in`` fresh hits is counted in memory (bounded), and
the stats flusher's pipeline carries the counts to Redis. Per model, Redis keeps the ``capacity``
hottest digests in a sorted set and, in a hash beside it, the instance and parameters that make
each one (what a refresh needs to recompute it). Both keys carry the model's hash tag.

A digest's score is exponentially decayed (half-life ``half_life`` seconds) and kept in log
space, so it never overflows and needs no periodic rescaling: a score ``s`` means a decayed
sample count of ``2 ** ((s - now) / half_life)``. One sample at time ``t`` scores ``t``; the
hottest digests have the highest scores, and a digest "was requested since time ``t``" (at least
as much as one sample then) exactly when its score is ``>= t``.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson

from caching.core.cluster import RedisClient, RedisPipeline
from caching.core.keys import KeySpace
from caching.core.store import REDIS_FAILURES, CacheUnavailable

# An instance larger than this is not sampled: its entry is refreshed by no one and just expires.
HOT_INSTANCE_MAX_BYTES = 64 * 1024
# A model's hot set is forgotten after this long without a sampled hit (a deleted model's too).
HOT_SET_RETAIN_SECONDS = 7 * 24 * 3600

# Adds one flush's samples of one model and keeps the set to its capacity, atomically (both keys
# share the model's hash tag, so this works on a cluster). Decayed counts add in log space:
# log2(2^a + 2^b) = max + log2(1 + 2^(min - max)), with scores in seconds (units of half-life).
#   KEYS: the sorted set, the instances hash
#   ARGV: now, half-life, capacity, retain seconds, then (digest, count, instance JSON) per sample
_ADD_SCRIPT = """
local now, half, capacity = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ln2 = math.log(2)
for i = 5, #ARGV, 3 do
  local digest, count = ARGV[i], tonumber(ARGV[i + 1])
  local score = now + half * math.log(count) / ln2
  local old = tonumber(redis.call('ZSCORE', KEYS[1], digest))
  if old then
    local high, low = math.max(old, score), math.min(old, score)
    score = high + half * math.log(1 + math.exp((low - high) * ln2 / half)) / ln2
  end
  redis.call('ZADD', KEYS[1], score, digest)
  redis.call('HSET', KEYS[2], digest, ARGV[i + 2])
end
local excess = redis.call('ZCARD', KEYS[1]) - capacity
while excess > 0 do
  local coldest = redis.call('ZRANGE', KEYS[1], 0, math.min(excess, 500) - 1)
  redis.call('HDEL', KEYS[2], unpack(coldest))
  redis.call('ZREM', KEYS[1], unpack(coldest))
  excess = excess - #coldest
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 0
"""


@dataclass
class _Pending:
    count: int
    instance: bytes  # {"i": instance, "p": parameters} as JSON


class HotSampler:
    """Samples fresh hits per model namespace in process; thread-safe, bounded in memory.

    ``one_in`` of 0 switches sampling off. At most ``pending_per_model`` distinct digests per
    model and ``pending_bytes`` of instances wait for a flush; further new digests are dropped
    (their hits are still counted once they are among the waiting ones).
    """

    def __init__(
        self,
        *,
        one_in: int,
        half_life: float = 600.0,
        capacity: int = 1000,
        pending_per_model: int = 500,
        pending_bytes: int = 8 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if one_in < 0 or half_life <= 0 or capacity < 1:
            raise ValueError("one_in >= 0, half_life > 0 and capacity >= 1")
        self.one_in = one_in
        self.half_life = half_life
        self.capacity = capacity
        self.pending_per_model = pending_per_model
        self.pending_bytes = pending_bytes
        self.clock = clock
        self._chance = 1.0 / one_in if one_in else 0.0
        # random.Random's methods are implemented in C: one call is atomic under the GIL.
        self._random = (rng or random.Random()).random
        self._log_unsampled = math.log1p(-self._chance) if 0 < self._chance < 1 else 0.0
        # Hits to pass over before the next sample. Unguarded: two threads counting down at once
        # may lose one offer's hits from the count, or one newly drawn gap; either only moves
        # the next sample a little, and each hit's chance stays about 1 / one_in.
        self._skip = self._gap()
        self._lock = threading.Lock()
        self._pending: dict[str, dict[str, _Pending]] = {}
        self._bytes = 0
        self.dropped = 0  # samples that found the pending memory full

    @property
    def enabled(self) -> bool:
        return self._chance > 0

    def offer(
        self,
        namespace: str,
        hits: Collection[str],
        positions: Mapping[str, int],
        instances: Sequence[Any],
        parameters: dict[str, Any] | None,
    ) -> int:
        """Sample some of the fresh ``hits`` (digests; ``instances[positions[d]]`` makes ``d``).

        Returns how many were sampled. Each hit is sampled with chance 1 / ``one_in``, drawn
        as the number of hits to the next sample, so that a hit that is not costs a subtraction.
        """
        if not self._chance:
            return 0
        left = self._skip - len(hits)
        if left >= 0:
            self._skip = left
            return 0
        ordered = list(hits)
        chosen = []
        position = self._skip
        while position < len(ordered):
            chosen.append(ordered[position])
            position += 1 + self._gap()
        self._skip = position - len(ordered)
        encoded = []
        for digest in chosen:
            try:
                data = orjson.dumps({"i": instances[positions[digest]], "p": parameters})
            except (TypeError, orjson.JSONEncodeError):  # parsed JSON always encodes; be safe
                continue
            if len(data) <= HOT_INSTANCE_MAX_BYTES:
                encoded.append((digest, data))
        with self._lock:
            waiting = self._pending.setdefault(namespace, {})
            for digest, data in encoded:
                known = waiting.get(digest)
                if known is not None:
                    known.count += 1
                elif len(waiting) < self.pending_per_model and self._bytes + len(data) <= self.pending_bytes:
                    waiting[digest] = _Pending(1, data)
                    self._bytes += len(data)
                else:
                    self.dropped += 1
        return len(encoded)

    def _gap(self) -> int:
        """Hits passed over before the next sample: geometric, as if each hit were drawn alone."""
        if not self._log_unsampled:
            return 0  # every hit is sampled (or none, and this is never asked)
        return int(math.log(1.0 - self._random()) / self._log_unsampled)

    def pending(self, namespace: str) -> dict[str, int]:
        """Sample counts per digest waiting for the next flush (for tests and operators)."""
        with self._lock:
            return {digest: item.count for digest, item in self._pending.get(namespace, {}).items()}

    def write_pending(self, pipe: RedisPipeline, keyspace: KeySpace) -> int:
        """Queue the waiting samples on ``pipe`` (the stats flush); returns the commands queued.

        Samples are an estimate: if the pipeline fails they are not kept for the next flush
        (unlike the counters), which only delays an entry's rise in its model's hot set.
        """
        with self._lock:
            pending, self._pending, self._bytes = self._pending, {}, 0
        now = self.clock()
        for namespace, samples in pending.items():
            arguments: list[str | int | float | bytes] = [now, self.half_life, self.capacity]
            arguments.append(HOT_SET_RETAIN_SECONDS)
            for digest, item in samples.items():
                arguments += [digest, item.count, item.instance]
            # Queued as a plain command: a cluster's pipeline has no eval(). Both keys share a slot.
            keys = (keyspace.hot(namespace), keyspace.hot_instances(namespace))
            pipe.execute_command("EVAL", _ADD_SCRIPT, 2, *keys, *arguments)  # type: ignore[no-untyped-call]
        return len(pending)


@dataclass(frozen=True, slots=True)
class HotEntry:
    """One digest of a model's hot set: how hot, and the request that makes it."""

    digest: str
    score: float  # decayed sample count 2 ** ((score - now) / half_life); see the module docstring
    instance: Any
    parameters: dict[str, Any] | None


def hot_set_read(client: RedisClient, keyspace: KeySpace, namespace: str) -> list[HotEntry]:
    """The hot set of one model namespace, hottest first, in one round trip; raises CacheUnavailable."""
    try:
        pipe = client.pipeline(transaction=False)
        pipe.zrange(keyspace.hot(namespace), 0, -1, desc=True, withscores=True)
        pipe.hgetall(keyspace.hot_instances(namespace))
        ranked, instances = cast(tuple[list[tuple[bytes, float]], dict[bytes, bytes]], pipe.execute())
    except REDIS_FAILURES as exc:
        raise CacheUnavailable(str(exc)) from exc
    entries = []
    for member, score in ranked:
        data = instances.get(member)
        if data is None:  # trimmed between the two reads: the next read will not list it
            continue
        try:
            request = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        entries.append(HotEntry(member.decode(), float(score), request["i"], request["p"]))
    return entries


def hot_set_forget(client: RedisClient, keyspace: KeySpace, namespace: str, digests: Sequence[str]) -> None:
    """Drop ``digests`` from a model's hot set (their requests no longer make those digests)."""
    if not digests:
        return
    try:
        pipe = client.pipeline(transaction=True)
        pipe.zrem(keyspace.hot(namespace), *digests)
        pipe.hdel(keyspace.hot_instances(namespace), *digests)
        pipe.execute()
    except REDIS_FAILURES as exc:
        raise CacheUnavailable(str(exc)) from exc
