"""The prediction store on Redis: one-MGET lookups (or one script that also takes locks), atomic saves."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis

from caching.core.cluster import RedisClient
from caching.core.keys import KeySpace
from caching.core.redis_scripts import LOOKUP_LOCKING_SCRIPT, SAVE_SCRIPT
from caching.core.redis_upkeep import RedisUpkeep
from caching.core.sentinels import NO_VALUE
from caching.core.store import (
    REDIS_FAILURES,
    CacheUnavailable,
    Fresh,
    LockRequest,
    Lookup,
    SaveOutcome,
    WaitingState,
    new_generation_token,
)
from caching.core.thread_connections import ThreadConnections

logger = logging.getLogger(__name__)


class RedisPredictionStore(RedisUpkeep):
    """The prediction store on Redis (or Redis Cluster: every key of a model shares its hash tag).

    The request path is here (lookups, saves, single-flight locks); job locks, purges and
    reclaim are in :class:`~caching.core.redis_upkeep.RedisUpkeep`.
    """

    def __init__(self, client: RedisClient, keyspace: KeySpace) -> None:
        super().__init__(client, keyspace)
        self._save_script = client.register_script(SAVE_SCRIPT)
        self._lookup_script = client.register_script(LOOKUP_LOCKING_SCRIPT)
        self._lookup_keys: dict[tuple[str, str], tuple[str, str, str]] = {}
        # A hit's MGET: on one Redis, on this thread's own connection, without the client's pool;
        # on a cluster, through the cluster client, which sends it to the primary owning the
        # model's slot and follows the slot when it moves (a failover, a resharding).
        self._reads: ThreadConnections | None = None
        self._read: Callable[..., Any] = self._cluster_read
        if isinstance(client, redis.Redis):
            self._reads = ThreadConnections(client)
            self._read = self._reads.read

    def _cluster_read(self, *args: Any) -> Any:
        return self.client.execute_command(*args)

    def close(self) -> None:
        """Disconnect the store's own connections (the client's pool is the client's to close)."""
        if self._reads is not None:
            self._reads.close()

    def lookup(
        self,
        namespace: str,
        model_version: str,
        digests: Sequence[str],
        *,
        locks: LockRequest | None = None,
        l1: bool = False,
    ) -> Lookup:
        """Both generations, the followed version and every entry: one MGET, or with ``locks`` one script."""
        entry = self.keyspace.entry
        keys = [*self._model_keys(namespace, model_version), *[entry(namespace, d) for d in digests]]
        try:
            # The client is built without decode_responses: every value is bytes or None.
            if locks is None:
                values = cast(list[Any], self._read("MGET", *keys))
            else:
                lock_keys = [self.keyspace.lock(namespace, d) for d in digests]
                values = cast(
                    list[Any], self._lookup_script(keys=keys + lock_keys, args=_lock_arguments(locks))
                )
        except redis.ResponseError as exc:
            if locks is None:
                raise CacheUnavailable(str(exc)) from exc
            # A Redis that refuses writes (out of memory under noeviction, a read-only replica) or
            # scripts (its ACL) still serves reads: the locks are then asked for on their own.
            logger.debug("lookup script refused (%s): reading without locks", exc)
            return self.lookup(namespace, model_version, digests)
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc
        model_generation, version_generation, version = values[0], values[1], values[2]
        new_keys: tuple[tuple[str, str], ...] = ()
        if model_generation is not None and version_generation is not None:
            generation = f"{model_generation.decode()}.{version_generation.decode()}"
        else:
            generation, new_keys = _generation_of(keys, model_generation, version_generation)
        count = len(digests)
        entries = [NO_VALUE if value is None else value for value in values[3 : 3 + count]]
        current_version = "" if version is None else version.decode()
        if locks is None:
            return Lookup(generation, new_keys, entries, current_version)
        states = values[3 + count :]
        return Lookup(
            generation,
            new_keys,
            entries,
            current_version,
            frozenset(d for d, state in zip(digests, states, strict=True) if state == 1),
            frozenset(d for d, state in zip(digests, states, strict=True) if state == 0),
        )

    def _model_keys(self, namespace: str, model_version: str) -> tuple[str, str, str]:
        """The keys every lookup of a model reads first: its generations and followed version."""
        keys = self._lookup_keys.get((namespace, model_version))
        if keys is None:
            if len(self._lookup_keys) >= 10_000:  # model versions come and go: stay bounded
                self._lookup_keys.clear()
            keys = self._lookup_keys[namespace, model_version] = (
                self.keyspace.generation(namespace),
                self.keyspace.version_generation(namespace, model_version),
                self.keyspace.followed_version(namespace),
            )
        return keys

    def save(
        self,
        namespace: str,
        lookup: Lookup,
        entries: Sequence[Fresh],
        *,
        version: str = "",
        follow_versions: bool = False,
        admit_after: int = 1,
        admission_window: int = 3600,
        locks: Sequence[str] = (),
        lock_token: str = "",
        handoff_seconds: float = 10.0,
    ) -> SaveOutcome:
        """Write entries in one atomic round trip, and release this request's locks.

        With ``follow_versions``, ``version`` (the tag of the model that computed the
        values) decides whether they are stored and which version the cache follows.
        With a ``lock_token``, an entry is stored only while its single-flight lock still
        holds that token, and the locks are released; ``locks`` names further digests
        whose locks to release.
        """
        keys = [
            self.keyspace.followed_version(namespace),
            self.keyspace.retired_versions(namespace),
            *(key for key, _ in lookup.new_generation_keys),
        ]
        args: list[str | bytes | int] = [
            version,
            "1" if follow_versions else "0",
            len(lookup.new_generation_keys),
            len(entries),
            admit_after,
            admission_window,
            lock_token,
            max(1, int(handoff_seconds * 1000)),
            *(token for _, token in lookup.new_generation_keys),
        ]
        for entry in entries:
            keys += [
                self.keyspace.entry(namespace, entry.digest),
                self.keyspace.admission(namespace, entry.digest),
                self.keyspace.lock(namespace, entry.digest),
                self.keyspace.handoff(namespace, entry.digest),
            ]
            args += [entry.value, entry.ttl_seconds]
        keys += [self.keyspace.lock(namespace, digest) for digest in locks]
        try:
            status, previous, stored = cast(list[Any], self._save_script(keys=keys, args=args))
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc
        return SaveOutcome(status.decode(), previous.decode(), int(stored))

    def acquire(self, namespace: str, digests: Sequence[str], token: str, ttl_seconds: float) -> set[str]:
        """Take the single-flight lock of each digest that nobody holds; one round trip."""
        try:
            pipe = self.client.pipeline(transaction=False)  # on a cluster, its client may be built now
            for digest in digests:
                pipe.set(
                    self.keyspace.lock(namespace, digest), token, nx=True, px=max(1, int(ttl_seconds * 1000))
                )
            results = pipe.execute()
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc
        return {digest for digest, taken in zip(digests, results, strict=True) if taken}

    def waiting_state(self, namespace: str, digests: Sequence[str]) -> WaitingState:
        """For requests waiting on others: which locks are still held, and the values handed
        off by computations that did not store them (not yet admitted). One round trip."""
        if not digests:
            return WaitingState(frozenset(), {})
        keys = [self.keyspace.lock(namespace, d) for d in digests]
        keys += [self.keyspace.handoff(namespace, d) for d in digests]
        try:
            values = cast(list[bytes | None], self.client.mget(keys))
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc
        held = frozenset(
            d for d, value in zip(digests, values[: len(digests)], strict=True) if value is not None
        )
        handed = {
            d: value for d, value in zip(digests, values[len(digests) :], strict=True) if value is not None
        }
        return WaitingState(held, handed)

    def release(self, namespace: str, digests: Sequence[str], token: str) -> None:
        """Give up locks this request holds (its computation failed), so waiters stop waiting."""
        if digests:
            empty = Lookup("", (), [])
            self.save(namespace, empty, [], locks=digests, lock_token=token)


def _generation_of(keys: Sequence[str], *tokens: bytes | None) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The generation of a lookup that found a token missing: a new random one in its place."""
    found: list[str] = []
    new_keys: list[tuple[str, str]] = []
    for key, value in zip(keys, tokens, strict=False):
        if value is None:
            token = new_generation_token()
            new_keys.append((key, token))
        else:
            token = value.decode()
        found.append(token)
    return ".".join(found), tuple(new_keys)


def _lock_arguments(locks: LockRequest) -> list[str | int]:
    return [
        locks.token,
        max(1, int(locks.ttl_seconds * 1000)),
        repr(locks.now),
        "1" if locks.follow_versions else "0",
        "1" if locks.every_entry else "0",
    ]
