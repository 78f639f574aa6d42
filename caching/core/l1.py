"""The in-process tier (L1): a model's hot entries in each process's memory, kept coherent by Redis.

A model with ``l1`` on is answered from this process's memory when every entry a request needs
is there, with no Redis command at all. Redis keeps the copies honest with server-assisted
client-side caching: one connection per process (:class:`Tracking`, RESP3) asks Redis, with
``CLIENT TRACKING ON BCAST PREFIX``, to push the name of every key that changes under an L1
model's entry, generation and version keys, and the tier forgets what a pushed name covers.

Coherence, and what it rests on:

- Redis writes the push for a change in the same event-loop turn as its reply to the command
  that made it (a purge's generation swap, a save, an instance purge's DEL, an expiry or an
  eviction). Every L1 answer first drains this process's tracking socket without waiting
  (one ``poll``), so once the purging client has its reply, no request that starts later in
  any process on the host is answered from what the purge replaced.
- The tier serves nothing while the channel is not known to be healthy: before the first
  ``CLIENT TRACKING`` reply, after the connection drops (Redis restarted, failed over,
  unreachable), or when the heartbeat (a PING every ``heartbeat_seconds``) has not been
  answered for three heartbeats. A new connection starts with an empty tier.
- A copy is taken from a Redis read only if no push for its model arrived, and the channel did
  not change, between just before the read and just after it: a change racing with the read
  leaves the entry to the next read.
- An entry is kept no longer than it is fresh (its header's fresh-until), nor than
  ``max_seconds``; serving stale entries, refreshing them and expiry stay Redis's business.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from caching.core.codec import CodecError, decode_header
from caching.core.keys import KeySpace
from caching.core.sentinels import NoValue
from caching.core.store import (
    REDIS_FAILURES,
    Fresh,
    LockRequest,
    Lookup,
    PredictionStore,
    SaveOutcome,
    WaitingState,
)

logger = logging.getLogger(__name__)

# Per entry, beyond its value and key: the OrderedDict node, the tuple, the floats (measured
# with tracemalloc, rounded up) — what the byte bound counts besides the bytes themselves.
_ENTRY_OVERHEAD = 200


@dataclass(frozen=True, slots=True)
class ModelState:
    """What a lookup reads of a model besides its entries: its generation and followed version."""

    generation: str
    current_version: str


class MemoryTier:
    """Entries (by Redis key name) and model states, least recently used first out, bounded."""

    def __init__(self, *, max_entries: int, max_bytes: int, monotonic: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # key: (value, deadline)
        self._models: dict[str, dict[str, ModelState]] = {}  # namespace: {model_version: state}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def values(self, namespace: str, model_version: str, keys: Sequence[str]) -> Lookup | None:
        """The lookup Redis would answer, if the tier holds the model's state and every entry."""
        now = self._monotonic()
        with self._lock:
            state = self._models.get(namespace, {}).get(model_version)
            if state is None:
                return None
            found: list[bytes | NoValue] = []
            for key in keys:
                held = self._entries.get(key)
                if held is None or held[1] <= now:
                    return None
                self._entries.move_to_end(key)
                found.append(held[0])
        return Lookup(state.generation, (), found, state.current_version, from_memory=True)

    def keep(
        self, namespace: str, model_version: str, keys: Sequence[str], lookup: Lookup, now: float
    ) -> None:
        """Keep what a Redis lookup read: the model's state and each present entry still fresh at ``now``."""
        if lookup.new_generation_keys:
            return  # a generation the lookup made up: not Redis's until a save publishes it
        deadline = self._monotonic()
        kept = []
        for key, value in zip(keys, lookup.raw_values, strict=True):
            if isinstance(value, NoValue):
                continue
            lifetime = _fresh_for(value, now)
            if lifetime > 0:
                kept.append((key, value, deadline + lifetime))
        with self._lock:
            self._models.setdefault(namespace, {})[model_version] = ModelState(
                lookup.generation, lookup.current_version
            )
            for key, value, until in kept:
                previous = self._entries.pop(key, None)
                if previous is not None:
                    self.bytes -= _size(key, previous[0])
                self._entries[key] = (value, until)
                self.bytes += _size(key, value)
            while self._entries and (len(self._entries) > self.max_entries or self.bytes > self.max_bytes):
                old_key, (old_value, _) = self._entries.popitem(last=False)
                self.bytes -= _size(old_key, old_value)

    def forget(self, keys: Sequence[str]) -> None:
        """Forget what changed keys cover: an entry, or a model's state (a generation or version key)."""
        with self._lock:
            for key in keys:
                held = self._entries.pop(key, None)
                if held is not None:
                    self.bytes -= _size(key, held[0])
                elif ":e:" not in key:
                    self._models.pop(key[: key.rfind("}") + 1], None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._models.clear()
            self.bytes = 0


def _size(key: str, value: bytes) -> int:
    return len(value) + len(key) + _ENTRY_OVERHEAD


def _fresh_for(value: bytes, now: float) -> float:
    """Seconds the stored value stays fresh after ``now`` (0: keep it out of the tier)."""
    try:
        header = decode_header(value)
    except CodecError:
        return 0.0  # the read-through logs and counts it; nothing to keep
    fresh_until = header.get("x")
    if not isinstance(fresh_until, int | float):
        return 0.0  # written before values said how long they are fresh: Redis knows its TTL
    return max(0.0, fresh_until - now)


class Tracking:
    """The connection Redis pushes key changes to, for the prefixes of the models in the tier.

    ``ready(namespace)`` is the request path's question: whether a change to that model's keys
    would have reached this process by now. It drains pending pushes first (no wait when none
    are pending). A background thread connects, registers prefixes and sends the heartbeat.
    """

    def __init__(
        self,
        connect: Callable[[], redis.Connection],
        keyspace_prefixes: Callable[[str], list[str]],
        *,
        on_keys: Callable[[list[str]], None],
        on_reset: Callable[[], None],
        heartbeat_seconds: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self._prefixes_of = keyspace_prefixes
        self._on_keys = on_keys
        self._on_reset = on_reset
        self.heartbeat_seconds = heartbeat_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()  # the connection: one command or drain at a time
        self._wanted: set[str] = set()  # namespaces asked for
        self._tracked: frozenset[str] = frozenset()  # namespaces Redis confirmed on this connection
        self._connection: Any = None  # a redis.Connection speaking RESP3 (redis-py leaves it untyped)
        self._poller: Any = None  # select.poll on the connection's socket: pushes pending?
        self._poll_lock = threading.Lock()
        self._answered = 0.0  # monotonic time of the last reply on the connection
        self._changes: dict[str, int] = {}  # pushes seen per namespace
        self.epoch = 0  # counts connections made and lost: a copy spans no change of it
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the request path ---------------------------------------------------------------

    def ready(self, namespace: str) -> bool:
        """Whether the tier may answer for ``namespace`` now: tracked, healthy, pushes drained."""
        connection = self._connection
        if connection is None or namespace not in self._tracked:
            if namespace not in self._wanted:
                self.want(namespace)
            return False
        if self._monotonic() - self._answered > 3 * self.heartbeat_seconds:
            return False
        with self._poll_lock:  # a poll object is not to be used by two threads at once
            pending = self._poller.poll(0)
        if pending:
            self._drain(connection)
        return self._connection is connection

    def stamp(self, namespace: str) -> tuple[int, int] | None:
        """Taken before a Redis read whose result may enter the tier; None: it may not."""
        if not self.ready(namespace):
            return None
        return self.epoch, self._changes.get(namespace, 0)

    def if_unchanged(self, namespace: str, stamp: tuple[int, int], keep: Callable[[], None]) -> None:
        """Run ``keep`` if nothing of ``namespace`` changed (no push, same connection) since ``stamp``.

        Pending pushes are drained first, and no push is handled while ``keep`` runs, so a
        change that raced with the read is either seen here or forgets what ``keep`` kept.
        """
        with self._lock:
            connection = self._connection
            if connection is None or namespace not in self._tracked:
                return
            self._drain_locked(connection)
            if self._connection is connection and (self.epoch, self._changes.get(namespace, 0)) == stamp:
                keep()

    def want(self, namespace: str) -> None:
        """Ask for ``namespace``'s pushes; the background thread registers it (never the request)."""
        with self._lock:
            if namespace in self._wanted:
                return
            self._wanted.add(namespace)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="predcache-l1-tracking", daemon=True)
                self._thread.start()
        self._wake.set()

    def _drain(self, connection: Any) -> None:
        with self._lock:
            self._drain_locked(connection)

    def _drain_locked(self, connection: Any) -> None:
        if self._connection is not connection:
            return
        try:
            while connection.can_read(timeout=0):
                connection.read_response(push_request=True)
        except REDIS_FAILURES as exc:
            self._lost(f"reading its pushes failed: {exc}")

    def _pushed(self, message: list[Any]) -> None:
        """The push handler: ``["invalidate", [key, ...]]``, or ``["invalidate", None]`` for a flush."""
        keys = message[1] if len(message) > 1 else None
        if keys is None:  # FLUSHALL, FLUSHDB
            self.epoch += 1
            self._on_reset()
            return
        names = [key.decode() if isinstance(key, bytes) else str(key) for key in keys]
        for name in names:
            namespace = name[: name.rfind("}") + 1]
            self._changes[namespace] = self._changes.get(namespace, 0) + 1
        self._on_keys(names)

    # --- the background thread -----------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            self._lost("closed")

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.heartbeat_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                try:
                    self._tend()
                except REDIS_FAILURES as exc:
                    self._lost(str(exc))
                except Exception:  # never let the thread die: the tier just stays off
                    logger.exception("L1 tracking failed")
                    self._lost("unexpected error")

    def _tend(self) -> None:
        """Connect if needed, register new prefixes, and check the connection answers (a PING)."""
        if self._connection is None:
            connection: Any = self._connect()  # redis-py's Connection: untyped
            connection.connect()
            connection._parser.set_invalidation_push_handler(self._pushed)
            poller = select.poll()
            poller.register(connection._sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            with self._poll_lock:
                self._poller = poller
            self._connection, self._tracked = connection, frozenset()
            self._on_reset()  # what was kept before was not covered by this connection's pushes
            logger.info("L1 tracking connected")
        connection = self._connection
        new = self._wanted - self._tracked
        if new:
            prefixes = [prefix for namespace in sorted(new) for prefix in self._prefixes_of(namespace)]
            arguments = [part for prefix in prefixes for part in ("PREFIX", prefix)]
            connection.send_command("CLIENT", "TRACKING", "ON", "BCAST", *arguments)
            connection.read_response()
        else:
            connection.send_command("PING")
            connection.read_response()
        self._answered = self._monotonic()
        if new:
            self.epoch += 1
            self._tracked = self._tracked | new

    def _lost(self, why: str) -> None:
        """Drop the connection (the lock is held): the tier serves nothing until a new one."""
        connection, self._connection, self._tracked = self._connection, None, frozenset()
        self.epoch += 1
        if connection is not None and not self._stop.is_set():
            logger.warning(
                "L1 tracking connection lost (%s): the in-process tier is off until it is back", why
            )
        if connection is not None:
            connection.disconnect()


def tracked_prefixes(keyspace: KeySpace) -> Callable[[str], list[str]]:
    """The key prefixes whose changes matter to the tier: a model's entries, generations and version."""

    def prefixes(namespace: str) -> list[str]:
        entry = keyspace.entry(namespace, "")
        return [entry, keyspace.generation(namespace), keyspace.followed_version(namespace)]

    return prefixes


class TieredStore:
    """A :class:`~caching.core.store.PredictionStore` with the in-process tier in front of another.

    Lookups with ``l1`` are answered from the tier when it holds everything they ask for, and
    fill it from the store's answer otherwise; everything else goes to the store unchanged
    (a purge's effect on the tier arrives as Redis's pushes, like anyone else's purge).
    """

    def __init__(
        self, store: PredictionStore, keyspace: KeySpace, tier: MemoryTier, tracking: Tracking
    ) -> None:
        self.store = store
        self.keyspace = keyspace
        self.tier = tier
        self.tracking = tracking

    def lookup(
        self,
        namespace: str,
        model_version: str,
        digests: Sequence[str],
        *,
        locks: LockRequest | None = None,
        l1: bool = False,
    ) -> Lookup:
        if not l1:
            return self.store.lookup(namespace, model_version, digests, locks=locks)
        entry = self.keyspace.entry
        keys = [entry(namespace, digest) for digest in digests]
        stamp = self.tracking.stamp(namespace)  # drains pending pushes first
        if stamp is not None:
            found = self.tier.values(namespace, model_version, keys)
            if found is not None:
                return found
        lookup = self.store.lookup(namespace, model_version, digests, locks=locks)
        if stamp is not None:
            now = time.time()
            self.tracking.if_unchanged(
                namespace, stamp, lambda: self.tier.keep(namespace, model_version, keys, lookup, now)
            )
        return lookup

    def save(self, namespace: str, lookup: Lookup, entries: Sequence[Fresh], **options: Any) -> SaveOutcome:
        return self.store.save(namespace, lookup, entries, **options)

    def acquire(self, namespace: str, digests: Sequence[str], token: str, ttl_seconds: float) -> set[str]:
        return self.store.acquire(namespace, digests, token, ttl_seconds)

    def waiting_state(self, namespace: str, digests: Sequence[str]) -> WaitingState:
        return self.store.waiting_state(namespace, digests)

    def release(self, namespace: str, digests: Sequence[str], token: str) -> None:
        self.store.release(namespace, digests, token)

    def job_lock(
        self, namespace: str, job: str, token: str, ttl_seconds: float, *, take_over: str = ""
    ) -> bool:
        return self.store.job_lock(namespace, job, token, ttl_seconds, take_over=take_over)

    def job_lock_held(self, namespace: str, job: str, token: str) -> bool:
        return self.store.job_lock_held(namespace, job, token)

    def job_unlock(self, namespace: str, job: str, token: str) -> None:
        self.store.job_unlock(namespace, job, token)

    def purge(self, namespace: str, model_version: str | None = None, *, keep_versions: bool = False) -> None:
        self.store.purge(namespace, model_version, keep_versions=keep_versions)

    def generation(self, namespace: str) -> str | None:
        return self.store.generation(namespace)

    def followed_version(self, namespace: str) -> tuple[str, list[str]]:
        return self.store.followed_version(namespace)

    def delete_entries(self, namespace: str, digests: Sequence[str]) -> int:
        return self.store.delete_entries(namespace, digests)

    def reclaim(self, namespace: str, is_live: Callable[[dict[str, Any]], bool], batch: int = 500) -> int:
        return self.store.reclaim(namespace, is_live, batch)

    def entry_headers(self, namespace: str, digests: Sequence[str]) -> list[dict[str, Any] | None]:
        return self.store.entry_headers(namespace, digests)

    def close(self) -> None:
        self.tracking.close()
        self.tier.clear()
        self.store.close()
