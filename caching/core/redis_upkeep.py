"""The Redis store's upkeep: background jobs' locks, purges, reclaim and entry headers.

None of it is on the request path: operators, tasks and the refresh-ahead sweep call these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from caching.core.cluster import RedisClient, scan_keys
from caching.core.codec import CodecError, decode_header
from caching.core.keys import KeySpace
from caching.core.redis_scripts import JOB_LOCK_SCRIPT, UNLOCK_SCRIPT
from caching.core.store import REDIS_FAILURES, CacheUnavailable, new_generation_token

# Reclaim reads this many bytes of each value: the header of practically every entry
# (generation, time, two version ids) fits, so payloads, however large, never cross the wire.
HEADER_READ_BYTES = 512


class RedisUpkeep:
    """The part of :class:`~caching.core.redis_store.RedisPredictionStore` off the request path."""

    def __init__(self, client: RedisClient, keyspace: KeySpace) -> None:
        self.client = client
        self.keyspace = keyspace
        self._unlock_script = client.register_script(UNLOCK_SCRIPT)
        self._job_lock_script = client.register_script(JOB_LOCK_SCRIPT)

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
        try:
            pipe = self.client.pipeline(transaction=True)  # on a cluster, its client may be built now
            if model_version is None:
                pipe.set(self.keyspace.generation(namespace), new_generation_token())
                if not keep_versions:
                    pipe.delete(
                        self.keyspace.followed_version(namespace), self.keyspace.retired_versions(namespace)
                    )
            else:
                pipe.set(self.keyspace.version_generation(namespace, model_version), new_generation_token())
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
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self.keyspace.followed_version(namespace))
            pipe.smembers(self.keyspace.retired_versions(namespace))
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
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.unlink(*(self.keyspace.entry(namespace, digest) for digest in unique))
            pipe.unlink(*(self.keyspace.lock(namespace, digest) for digest in unique))
            return int(pipe.execute()[0])
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc

    def reclaim(self, namespace: str, is_live: Callable[[dict[str, Any]], bool], batch: int = 500) -> int:
        """Free the memory of entries ``is_live`` rejects; returns how many were deleted.

        Purges only swap a generation, so purged entries stay until their TTL. This walks
        the namespace's entries with SCAN (never KEYS: Redis keeps serving between
        batches; on a cluster, on every primary), reads only each value's header
        (GETRANGE, one pipeline per batch) and UNLINKs the dead ones. A value whose header
        cannot be decoded is left to its TTL: it is never served, and it may be a newer
        format this process does not know. Raises CacheUnavailable.
        """
        pattern = self.keyspace.entry(glob_escaped(namespace), "*")
        freed = 0
        try:
            for keys, _ in scan_keys(self.client, match=pattern, count=batch):
                if not keys:
                    continue
                headers = self._entry_headers(keys)
                dead = [
                    key
                    for key, header in zip(keys, headers, strict=True)
                    if header is not None and not is_live(header)
                ]
                if dead:
                    freed += self._unlink_each(dead)
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc
        return freed

    def _unlink_each(self, keys: Sequence[bytes | str]) -> int:
        """UNLINK each key on its own, in one pipeline: how many existed.

        One command per key, so on a cluster each follows its key wherever it is while its
        slot migrates (one multi-key UNLINK there fails unless all its keys moved together).
        """
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.unlink(key)
        return sum(int(deleted) for deleted in pipe.execute())

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


def _header_or_none(prefix: bytes) -> dict[str, Any] | None:
    if not prefix:  # expired or deleted since the SCAN
        return None
    try:
        return decode_header(prefix)
    except CodecError:
        return None


def glob_escaped(text: str) -> str:
    """``text`` matched literally by a SCAN MATCH pattern (the key prefix is operator-chosen)."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
