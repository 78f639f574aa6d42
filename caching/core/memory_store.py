"""The prediction store in process memory: thread-safe, with TTLs against an injectable clock.

It keeps the Redis store's key names and semantics (generations, followed and retired
versions, single-flight locks with tokens, admission counts, hand-offs, job locks), each
method atomic under one lock as a Lua script is on Redis, so the read-through logic above
:class:`~caching.core.store.PredictionStore` is unit-tested on it in milliseconds. It is also
the seed of an in-process tier.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from caching.core.codec import CodecError, decode_header
from caching.core.freshness import ServedState, needs_lock
from caching.core.keys import KeySpace
from caching.core.sentinels import NO_VALUE, NoValue
from caching.core.store import (
    ADVANCED,
    STORED,
    SUPERSEDED,
    Fresh,
    LockRequest,
    Lookup,
    SaveOutcome,
    WaitingState,
    new_generation_token,
)


class _Keys:
    """Byte strings and sets by key name, each with an optional expiry (not thread-safe alone)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.values: dict[str, tuple[Any, float | None]] = {}

    def get(self, key: str) -> Any:
        held = self.values.get(key)
        if held is None:
            return NO_VALUE
        if held[1] is not None and held[1] <= self.clock():
            del self.values[key]
            return NO_VALUE
        return held[0]

    def set(self, key: str, value: Any, seconds: float | None = None, *, only_new: bool = False) -> bool:
        if only_new and not isinstance(self.get(key), NoValue):
            return False
        self.values[key] = (value, None if seconds is None else self.clock() + seconds)
        return True

    def delete(self, key: str) -> bool:
        return not isinstance(self.get(key), NoValue) and self.values.pop(key, None) is not None

    def matching(self, pattern: str) -> list[str]:
        return [key for key in list(self.values) if fnmatch.fnmatchcase(key, pattern)]


class MemoryPredictionStore:
    """A :class:`~caching.core.store.PredictionStore` in this process's memory."""

    def __init__(self, keyspace: KeySpace | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.keyspace = keyspace or KeySpace("memory:", "local")
        self._keys = _Keys(clock)
        self._lock = threading.Lock()

    def lookup(
        self,
        namespace: str,
        model_version: str,
        digests: Sequence[str],
        *,
        locks: LockRequest | None = None,
        l1: bool = False,
    ) -> Lookup:
        space, keys = self.keyspace, self._keys
        with self._lock:
            tokens, new_keys = [], []
            for key in (space.generation(namespace), space.version_generation(namespace, model_version)):
                token = keys.get(key)
                if isinstance(token, NoValue):
                    token = new_generation_token()
                    new_keys.append((key, token))
                tokens.append(token)
            current = keys.get(space.followed_version(namespace))
            current = "" if isinstance(current, NoValue) else current
            raw: list[bytes | NoValue] = [keys.get(space.entry(namespace, d)) for d in digests]
            locked: set[str] = set()
            held: set[str] = set()
            if locks is not None:
                state = ServedState(".".join(tokens), current)  # made-up tokens match no entry
                for digest, value in zip(digests, raw, strict=True):
                    if not locks.every_entry and not self._lockable(value, state, locks):
                        continue
                    lock = space.lock(namespace, digest)
                    taken = keys.set(lock, locks.token, max(0.001, locks.ttl_seconds), only_new=True)
                    (locked if taken else held).add(digest)
        return Lookup(".".join(tokens), tuple(new_keys), raw, current, frozenset(locked), frozenset(held))

    @staticmethod
    def _lockable(value: bytes | NoValue, state: ServedState, locks: LockRequest) -> bool:
        header = None if isinstance(value, NoValue) else _header_or_none(value)
        return needs_lock(header, state=state, follow_versions=locks.follow_versions, now=locks.now)

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
        space, keys = self.keyspace, self._keys
        with self._lock:
            releasable = [entry.digest for entry in entries] + list(locks)
            current = keys.get(space.followed_version(namespace))
            current = "" if isinstance(current, NoValue) else current
            status = STORED
            if follow_versions and current != version:
                retired = keys.get(space.retired_versions(namespace))
                retired = set() if isinstance(retired, NoValue) else retired
                if version == "" or version in retired:
                    self._release(namespace, releasable, lock_token)
                    return SaveOutcome(SUPERSEDED, current, 0)
                if current:
                    keys.set(space.retired_versions(namespace), retired | {current})
                keys.set(space.followed_version(namespace), version)
                status = ADVANCED
            # Another request's made-up generation published first: these entries would never be read.
            generation_ok = True
            for key, token in lookup.new_generation_keys:
                keys.set(key, token, only_new=True)
                generation_ok = generation_ok and keys.get(key) == token
            stored = 0
            for entry in entries if generation_ok else ():
                if lock_token and keys.get(space.lock(namespace, entry.digest)) != lock_token:
                    continue
                if self._admitted(namespace, entry.digest, admit_after, admission_window):
                    keys.set(space.entry(namespace, entry.digest), entry.value, entry.ttl_seconds)
                    stored += 1
                else:
                    keys.set(space.handoff(namespace, entry.digest), entry.value, handoff_seconds)
            self._release(namespace, releasable, lock_token)
        return SaveOutcome(status, current, stored)

    def _admitted(self, namespace: str, digest: str, admit_after: int, window: int) -> bool:
        if admit_after <= 1:
            return True
        key = self.keyspace.admission(namespace, digest)
        held = self._keys.values.get(key)
        seen = self._keys.get(key)
        seen = 1 if isinstance(seen, NoValue) else seen + 1
        expiry = window if held is None or seen == 1 else max(0.001, (held[1] or 0) - self._keys.clock())
        if seen >= admit_after:
            self._keys.delete(key)
            return True
        self._keys.set(key, seen, expiry)
        return False

    def _release(self, namespace: str, digests: Sequence[str], token: str) -> None:
        for digest in digests if token else ():
            key = self.keyspace.lock(namespace, digest)
            if self._keys.get(key) == token:
                self._keys.delete(key)

    def acquire(self, namespace: str, digests: Sequence[str], token: str, ttl_seconds: float) -> set[str]:
        with self._lock:
            return {
                d
                for d in digests
                if self._keys.set(
                    self.keyspace.lock(namespace, d), token, max(0.001, ttl_seconds), only_new=True
                )
            }

    def waiting_state(self, namespace: str, digests: Sequence[str]) -> WaitingState:
        with self._lock:
            held = frozenset(
                d
                for d in digests
                if not isinstance(self._keys.get(self.keyspace.lock(namespace, d)), NoValue)
            )
            handed = {d: self._keys.get(self.keyspace.handoff(namespace, d)) for d in digests}
        return WaitingState(held, {d: v for d, v in handed.items() if not isinstance(v, NoValue)})

    def release(self, namespace: str, digests: Sequence[str], token: str) -> None:
        with self._lock:
            self._release(namespace, digests, token)

    def job_lock(
        self, namespace: str, job: str, token: str, ttl_seconds: float, *, take_over: str = ""
    ) -> bool:
        key = self.keyspace.job(namespace, job)
        with self._lock:
            holder = self._keys.get(key)
            if not isinstance(holder, NoValue) and (not take_over or not holder.startswith(take_over)):
                return False
            return self._keys.set(key, token, max(0.001, ttl_seconds))

    def job_lock_held(self, namespace: str, job: str, token: str) -> bool:
        with self._lock:
            return bool(self._keys.get(self.keyspace.job(namespace, job)) == token)

    def job_unlock(self, namespace: str, job: str, token: str) -> None:
        key = self.keyspace.job(namespace, job)
        with self._lock:
            if self._keys.get(key) == token:
                self._keys.delete(key)

    def purge(self, namespace: str, model_version: str | None = None, *, keep_versions: bool = False) -> None:
        space = self.keyspace
        with self._lock:
            if model_version is not None:
                self._keys.set(space.version_generation(namespace, model_version), new_generation_token())
                return
            self._keys.set(space.generation(namespace), new_generation_token())
            if not keep_versions:
                self._keys.delete(space.followed_version(namespace))
                self._keys.delete(space.retired_versions(namespace))

    def generation(self, namespace: str) -> str | None:
        with self._lock:
            token = self._keys.get(self.keyspace.generation(namespace))
        return None if isinstance(token, NoValue) else str(token)

    def followed_version(self, namespace: str) -> tuple[str, list[str]]:
        with self._lock:
            current = self._keys.get(self.keyspace.followed_version(namespace))
            retired = self._keys.get(self.keyspace.retired_versions(namespace))
        return (
            "" if isinstance(current, NoValue) else current,
            [] if isinstance(retired, NoValue) else sorted(retired),
        )

    def delete_entries(self, namespace: str, digests: Sequence[str]) -> int:
        with self._lock:
            removed = 0
            for digest in dict.fromkeys(digests):
                removed += self._keys.delete(self.keyspace.entry(namespace, digest))
                self._keys.delete(self.keyspace.lock(namespace, digest))
        return removed

    def reclaim(self, namespace: str, is_live: Callable[[dict[str, Any]], bool], batch: int = 500) -> int:
        pattern = self.keyspace.entry(_glob_escaped(namespace), "*")
        with self._lock:
            keys = self._keys.matching(pattern)
            values = [(key, self._keys.get(key)) for key in keys]
        dead = []
        for key, value in values:
            header = None if isinstance(value, NoValue) else _header_or_none(value)
            if header is not None and not is_live(header):
                dead.append(key)
        with self._lock:
            return sum(self._keys.delete(key) for key in dead)

    def close(self) -> None:
        """Nothing to release."""

    def entry_headers(self, namespace: str, digests: Sequence[str]) -> list[dict[str, Any] | None]:
        with self._lock:
            values = [self._keys.get(self.keyspace.entry(namespace, d)) for d in digests]
        return [None if isinstance(value, NoValue) else _header_or_none(value) for value in values]


def _header_or_none(value: bytes) -> dict[str, Any] | None:
    try:
        return decode_header(value)
    except CodecError:
        return None


def _glob_escaped(text: str) -> str:
    """``text`` matched literally by a glob pattern (fnmatch knows only ``[]`` escapes)."""
    return "".join(f"[{char}]" if char in "*?[]" else char for char in text)
