"""The prediction store on Redis: one-MGET lookups (or one script that also takes locks), atomic saves."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis

from caching.core.codec import CodecError, decode_header
from caching.core.keys import KeySpace
from caching.core.redis_scripts import JOB_LOCK_SCRIPT, LOOKUP_LOCKING_SCRIPT, SAVE_SCRIPT, UNLOCK_SCRIPT
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

logger = logging.getLogger(__name__)

# Reclaim reads this many bytes of each value: the header of practically every entry
# (generation, time, two version ids) fits, so payloads, however large, never cross the wire.
HEADER_READ_BYTES = 512


class RedisPredictionStore:
    """The prediction store on Redis (or Redis Cluster: every key of a model shares its hash tag)."""

    def __init__(self, client: redis.Redis, keyspace: KeySpace) -> None:
        self.client = client
        self.keyspace = keyspace
        self._save_script = client.register_script(SAVE_SCRIPT)
        self._unlock_script = client.register_script(UNLOCK_SCRIPT)
        self._job_lock_script = client.register_script(JOB_LOCK_SCRIPT)
        self._lookup_script = client.register_script(LOOKUP_LOCKING_SCRIPT)

    def lookup(
        self, namespace: str, model_version: str, digests: Sequence[str], *, locks: LockRequest | None = None
    ) -> Lookup:
        """Both generations, the followed version and every entry: one MGET, or with ``locks`` one script."""
        keys = [
            self.keyspace.generation(namespace),
            self.keyspace.version_generation(namespace, model_version),
            self.keyspace.followed_version(namespace),
            *(self.keyspace.entry(namespace, d) for d in digests),
        ]
        try:
            # The client is built without decode_responses: every value is bytes or None.
            if locks is None:
                values = cast(list[Any], self.client.mget(keys))
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
        tokens: list[str] = []
        new_keys: list[tuple[str, str]] = []
        for key, value in zip(keys[:2], values, strict=False):
            if value is None:
                token = new_generation_token()
                new_keys.append((key, token))
            else:
                token = value.decode()
            tokens.append(token)
        version = values[2]
        count = len(digests)
        locked: frozenset[str] = frozenset()
        held: frozenset[str] = frozenset()
        if locks is not None:
            states = values[3 + count :]
            locked = frozenset(d for d, state in zip(digests, states, strict=True) if state == 1)
            held = frozenset(d for d, state in zip(digests, states, strict=True) if state == 0)
        return Lookup(
            ".".join(tokens),
            tuple(new_keys),
            [NO_VALUE if value is None else value for value in values[3 : 3 + count]],
            "" if version is None else version.decode(),
            locked,
            held,
        )

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
        pipe = self.client.pipeline(transaction=False)
        for digest in digests:
            pipe.set(
                self.keyspace.lock(namespace, digest), token, nx=True, px=max(1, int(ttl_seconds * 1000))
            )
        try:
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

    def job_lock(
        self, namespace: str, job: str, token: str, ttl_seconds: float, *, take_over: str = ""
    ) -> bool:
        """Take the lock of one background job of a model (a warm, a purge); it expires by itself.

        With ``take_over``, a lock whose holder's token starts with it is taken as well: a task
        delivered again after its worker died takes back the lock its first delivery held.
        """
        try:
            taken = self._job_lock_script(
                keys=[self.keyspace.job(namespace, job)],
                args=[token, max(1, int(ttl_seconds * 1000)), take_over],
            )
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc
        return bool(taken)

    def job_lock_held(self, namespace: str, job: str, token: str) -> bool:
        """Whether ``token`` still holds the job's lock (it may have expired, or been taken over)."""
        try:
            holder = self.client.get(self.keyspace.job(namespace, job))
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc
        return holder == token.encode()

    def job_unlock(self, namespace: str, job: str, token: str) -> None:
        """Give a job lock back, only if this holder still has it (it may have expired and moved on)."""
        try:
            self._unlock_script(keys=[self.keyspace.job(namespace, job)], args=[token])
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc

    def purge(self, namespace: str, model_version: str | None = None, *, keep_versions: bool = False) -> None:
        """Make every entry of the model (or of one of its versions) unreachable at once.

        A whole-model purge also forgets which deployed versions were seen (so after a
        rollback to a retired version the cache follows it again), unless ``keep_versions``.
        """
        pipe = self.client.pipeline(transaction=True)
        if model_version is None:
            pipe.set(self.keyspace.generation(namespace), new_generation_token())
            if not keep_versions:
                pipe.delete(
                    self.keyspace.followed_version(namespace), self.keyspace.retired_versions(namespace)
                )
        else:
            pipe.set(self.keyspace.version_generation(namespace, model_version), new_generation_token())
        try:
            pipe.execute()
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc

    def generation(self, namespace: str) -> str | None:
        """The current model-wide generation token of ``namespace``, if it has one."""
        try:
            value = cast(bytes | None, self.client.get(self.keyspace.generation(namespace)))
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc
        return None if value is None else value.decode()

    def followed_version(self, namespace: str) -> tuple[str, list[str]]:
        """The version tag the cache follows and the retired ones (for operators)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keyspace.followed_version(namespace))
        pipe.smembers(self.keyspace.retired_versions(namespace))
        try:
            current, retired = pipe.execute()
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc
        return (current or b"").decode(), sorted(member.decode() for member in retired)

    def delete_entries(self, namespace: str, digests: Sequence[str]) -> int:
        """Delete the entries of ``digests`` and their single-flight locks, in one round trip.

        Deleting the locks keeps a computation that started before the purge from storing
        its (possibly outdated) answer afterwards. Returns how many entries existed.
        """
        unique = list(dict.fromkeys(digests))
        if not unique:
            return 0
        pipe = self.client.pipeline(transaction=True)
        pipe.unlink(*(self.keyspace.entry(namespace, digest) for digest in unique))
        pipe.unlink(*(self.keyspace.lock(namespace, digest) for digest in unique))
        try:
            return int(pipe.execute()[0])
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc

    def reclaim(self, namespace: str, is_live: Callable[[dict[str, Any]], bool], batch: int = 500) -> int:
        """Free the memory of entries ``is_live`` rejects; returns how many were deleted.

        Purges only swap a generation, so purged entries stay until their TTL. This walks
        the namespace's entries with SCAN (never KEYS: Redis keeps serving between
        batches), reads only each value's header (GETRANGE, one pipeline per batch) and
        UNLINKs the dead ones. A value whose header cannot be decoded is left to its TTL:
        it is never served, and it may be a newer format this process does not know.
        Raises CacheUnavailable.
        """
        pattern = self.keyspace.entry(_glob_escaped(namespace), "*")
        freed = 0
        cursor = 0
        try:
            while True:
                cursor, keys = self.client.scan(cursor, match=pattern, count=batch)
                if keys:
                    headers = self._entry_headers(keys)
                    dead = [
                        key
                        for key, header in zip(keys, headers, strict=True)
                        if header is not None and not is_live(header)
                    ]
                    if dead:
                        freed += self.client.unlink(*dead)
                if cursor == 0:
                    return freed
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc

    def entry_headers(self, namespace: str, digests: Sequence[str]) -> list[dict[str, Any] | None]:
        """The header of each digest's entry (None: no entry, or undecodable); payloads are not read.

        Raises CacheUnavailable.
        """
        if not digests:
            return []
        try:
            return self._entry_headers([self.keyspace.entry(namespace, digest) for digest in digests])
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc

    def _entry_headers(self, keys: Sequence[bytes | str]) -> list[dict[str, Any] | None]:
        """The decoded header of each key's value (None: gone or undecodable), two round trips at most."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.getrange(key, 0, HEADER_READ_BYTES - 1)
        prefixes = cast(list[bytes], pipe.execute())
        headers = [_header_or_none(prefix) for prefix in prefixes]
        # Headers longer than the bytes read (very long version names) are rare: read those whole.
        cut = [
            index
            for index, prefix in enumerate(prefixes)
            if headers[index] is None and len(prefix) == HEADER_READ_BYTES
        ]
        if cut:
            pipe = self.client.pipeline(transaction=False)
            for index in cut:
                pipe.get(keys[index])
            for index, value in zip(cut, cast(list[bytes | None], pipe.execute()), strict=True):
                headers[index] = _header_or_none(value or b"")
        return headers


def _lock_arguments(locks: LockRequest) -> list[str | int]:
    return [
        locks.token,
        max(1, int(locks.ttl_seconds * 1000)),
        repr(locks.now),
        "1" if locks.follow_versions else "0",
        "1" if locks.every_entry else "0",
    ]


def _header_or_none(prefix: bytes) -> dict[str, Any] | None:
    if not prefix:  # expired or deleted since the SCAN
        return None
    try:
        return decode_header(prefix)
    except CodecError:
        return None


def _glob_escaped(text: str) -> str:
    """``text`` matched literally by a SCAN MATCH pattern (the key prefix is operator-chosen)."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
