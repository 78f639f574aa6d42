"""Redis access for predictions: one client factory, one-round-trip lookups, pipelined writes."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from caching.core.codec import CodecError, decode_header
from caching.core.keys import KeySpace

# Every error redis-py raises: refused or dropped connections, timeouts, and error replies
# (out of memory, read-only replica after a failover, missing ACL permission, not Redis at
# all). The request path fails open on all of them.
REDIS_FAILURES: tuple[type[BaseException], ...] = (redis.RedisError,)

# Reclaim reads this many bytes of each value: the header of practically every entry
# (generation, time, two version ids) fits, so payloads, however large, never cross the wire.
HEADER_READ_BYTES = 512


class CacheUnavailable(Exception):
    """Redis could not serve the command: unreachable, too slow, or answering with an error."""


def redis_client(
    url: str,
    *,
    socket_timeout: float,
    connect_timeout: float,
    password: str = "",
    tls_ca_cert: str = "",
    tls_check_hostname: bool = True,
) -> redis.Redis:
    """The one Redis client factory: short timeouts and no hidden retries, so an outage fails fast.

    ``password`` (Memorystore's AUTH string) wins over a password in the URL. A ``rediss://``
    server's certificate must chain to ``tls_ca_cert`` (PEM text, or a PEM file's path) if
    given, else to the system's CAs; the host name is checked if ``tls_check_hostname``.
    """
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    url_options: dict[str, Any] = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    if url_options.get("connection_class") is redis.SSLConnection:
        options.update(ssl_cert_reqs="required", ssl_check_hostname=tls_check_hostname)
        if tls_ca_cert:
            options["ssl_ca_data" if "-----BEGIN" in tls_ca_cert else "ssl_ca_certs"] = tls_ca_cert
    elif tls_ca_cert:
        raise ValueError("a CA certificate needs a rediss:// URL")
    options.update(url_options)  # as in Redis.from_url, the URL's query arguments win...
    if password:
        options["password"] = password  # ...but not over the AUTH string given apart
    client = redis.Redis(connection_pool=redis.ConnectionPool(**options))
    client.auto_close_connection_pool = True  # close() disconnects the pool, as from_url's clients do
    return client


@dataclass(frozen=True, slots=True)
class Lookup:
    """What one lookup round trip found.

    An entry is served only if it carries ``generation``: the model's
    generation token joined with that of the model version. Purging swaps a
    token. A token missing from Redis is replaced by a fresh random one that
    :meth:`PredictionStore.save` publishes (``SET NX``), so a lost generation
    key can never revive entries written before a purge.

    ``current_version`` is the version tag of the deployed model the cache follows
    (``""`` when the backend never reported one), read in the same round trip.
    """

    generation: str
    new_generation_keys: tuple[tuple[str, str], ...]
    raw_values: list[bytes | None]
    current_version: str = ""


# What a save did with the version it was given (see _SAVE_SCRIPT).
STORED, ADVANCED, SUPERSEDED = "stored", "advanced", "superseded"


@dataclass(frozen=True, slots=True)
class SaveOutcome:
    status: str  # STORED, ADVANCED (stored, and the cache now follows this version) or SUPERSEDED
    previous_version: str  # the version followed before the save
    stored: int = 0  # entries written (admission may hold some back)


# One atomic round trip per save. When following versions, an answer from the version the
# cache follows is stored; one from a version never seen before makes the cache follow it
# (the old version is retired and its entries stop being served); one from a retired
# version is returned to its client but not stored, so a slow answer from the old model
# cannot win back the cache. A request that took single-flight locks stores an entry only
# while it still holds that entry's lock: an instance purge deletes the locks, so an answer
# computed before the purge is not stored after it. With admission (admit > 1) an entry is
# stored only once its instance has missed that many times within the window; until then
# it is handed off (kept briefly) for requests waiting on this computation. The locks are
# released last. A model's keys share a hash tag, so this works on a cluster.
#   KEYS: version, retired, generation keys to create,
#         (entry, admission, lock, handoff) per entry, further locks to release
#   ARGV: tag, follow, #generations, #entries, admit, admission window, lock token,
#         handoff ms, generation tokens, (value, ttl) per entry
_SAVE_SCRIPT = """
local tag, follow = ARGV[1], ARGV[2]
local ngen, nent, admit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local window, token, handoff_ms = ARGV[6], ARGV[7], ARGV[8]
local function owned(key)
  return token ~= '' and redis.call('GET', key) == token
end
local function release()
  for i = 1, nent do
    local lock = KEYS[2 + ngen + 4 * (i - 1) + 3]
    if owned(lock) then redis.call('DEL', lock) end
  end
  for i = 3 + ngen + 4 * nent, #KEYS do
    if owned(KEYS[i]) then redis.call('DEL', KEYS[i]) end
  end
end
local current = redis.call('GET', KEYS[1]) or ''
local status = 'stored'
if follow == '1' and current ~= tag then
  if tag == '' or redis.call('SISMEMBER', KEYS[2], tag) == 1 then
    release()
    return {'superseded', current, 0}
  end
  if current ~= '' then redis.call('SADD', KEYS[2], current) end
  redis.call('SET', KEYS[1], tag)
  status = 'advanced'
end
-- Publish the generation tokens this request made up for missing keys. If another request
-- published its own first, this request's entries carry a generation nobody will read:
-- store nothing rather than write entries that can never be served.
local generation_ok = true
for i = 1, ngen do
  redis.call('SET', KEYS[2 + i], ARGV[8 + i], 'NX')
  if redis.call('GET', KEYS[2 + i]) ~= ARGV[8 + i] then generation_ok = false end
end
local stored = 0
for i = 1, (generation_ok and nent or 0) do
  local base = 2 + ngen + 4 * (i - 1)
  local entry, admission, lock, handoff = KEYS[base + 1], KEYS[base + 2], KEYS[base + 3], KEYS[base + 4]
  local value, ttl = ARGV[8 + ngen + 2 * i - 1], ARGV[8 + ngen + 2 * i]
  if token == '' or owned(lock) then
    local admitted = true
    if admit > 1 then
      local seen = redis.call('INCR', admission)
      if seen == 1 then redis.call('EXPIRE', admission, window) end
      admitted = seen >= admit
      if admitted then redis.call('DEL', admission) end
    end
    if admitted then
      redis.call('SET', entry, value, 'EX', ttl)
      stored = stored + 1
    else
      redis.call('SET', handoff, value, 'PX', handoff_ms)
    end
  end
end
release()
return {status, current, stored}
"""


# Delete a lock only while it still holds the caller's token.
_UNLOCK_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Take a job lock that nobody holds, or whose holder's token starts with ARGV[3] (when given):
# the same task delivered again, whose first delivery died holding it.
_JOB_LOCK_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder and (ARGV[3] == '' or string.sub(holder, 1, #ARGV[3]) ~= ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class Fresh:
    """One encoded prediction to store, with its lifetime in Redis."""

    digest: str
    value: bytes
    ttl_seconds: int


class PredictionStore:
    """Stores encoded predictions per model namespace; invalidation is a generation swap."""

    def __init__(self, client: redis.Redis, keyspace: KeySpace) -> None:
        self.client = client
        self.keyspace = keyspace
        self._save_script = client.register_script(_SAVE_SCRIPT)
        self._unlock_script = client.register_script(_UNLOCK_SCRIPT)
        self._job_lock_script = client.register_script(_JOB_LOCK_SCRIPT)

    def lookup(self, namespace: str, model_version: str, digests: Sequence[str]) -> Lookup:
        """Read both generations, the followed version and every entry with a single MGET."""
        generation_keys = (
            self.keyspace.generation(namespace),
            self.keyspace.version_generation(namespace, model_version),
        )
        keys = [
            *generation_keys,
            self.keyspace.followed_version(namespace),
            *(self.keyspace.entry(namespace, d) for d in digests),
        ]
        try:
            # The client is built without decode_responses: every value is bytes or None.
            values = cast(list[bytes | None], self.client.mget(keys))
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc
        tokens: list[str] = []
        new_keys: list[tuple[str, str]] = []
        for key, value in zip(generation_keys, values, strict=False):
            if value is None:
                token = new_generation_token()
                new_keys.append((key, token))
            else:
                token = value.decode()
            tokens.append(token)
        version = values[len(generation_keys)]
        return Lookup(
            ".".join(tokens),
            tuple(new_keys),
            values[len(generation_keys) + 1 :],
            "" if version is None else version.decode(),
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

    def waiting_state(self, namespace: str, digests: Sequence[str]) -> tuple[set[str], dict[str, bytes]]:
        """For requests waiting on others: which locks are still held, and the values handed
        off by computations that did not store them (not yet admitted). One round trip."""
        if not digests:
            return set(), {}
        keys = [self.keyspace.lock(namespace, d) for d in digests]
        keys += [self.keyspace.handoff(namespace, d) for d in digests]
        try:
            values = cast(list[bytes | None], self.client.mget(keys))
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc
        held = {d for d, value in zip(digests, values[: len(digests)], strict=True) if value is not None}
        handed = {
            d: value for d, value in zip(digests, values[len(digests) :], strict=True) if value is not None
        }
        return held, handed

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


def new_generation_token() -> str:
    """A random generation token; random (not a counter) so a lost key cannot repeat an old one."""
    return secrets.token_hex(8)


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
