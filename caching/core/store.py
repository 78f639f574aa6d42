"""Redis access for predictions: one client factory, one-round-trip lookups, pipelined writes."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from caching.core.keys import KeySpace

# Every error redis-py raises: refused or dropped connections, timeouts, and error replies
# (out of memory, read-only replica after a failover, missing ACL permission, not Redis at
# all). The request path fails open on all of them.
REDIS_FAILURES: tuple[type[BaseException], ...] = (redis.RedisError,)


class CacheUnavailable(Exception):
    """Redis could not serve the command: unreachable, too slow, or answering with an error."""


def redis_client(url: str, *, socket_timeout: float, connect_timeout: float) -> redis.Redis:
    """The one Redis client factory: short timeouts and no hidden retries, so an outage fails fast."""
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


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


# One atomic round trip per save. When following versions, an answer from the version the
# cache follows is stored; one from a version never seen before makes the cache follow it
# (the old version is retired and its entries stop being served); one from a retired
# version is returned to its client but not stored, so a slow answer from the old model
# cannot win back the cache. A model's keys share a hash tag, so this works on a cluster.
#   KEYS: version, retired, generation keys to create, entry keys
#   ARGV: version tag, follow ("1"/"0"), ttl, number of generation keys, their tokens, values
_SAVE_SCRIPT = """
local tag, follow, ttl, ngen = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local current = redis.call('GET', KEYS[1]) or ''
local status = 'stored'
if follow == '1' and current ~= tag then
  if tag == '' or redis.call('SISMEMBER', KEYS[2], tag) == 1 then
    return {'superseded', current}
  end
  if current ~= '' then redis.call('SADD', KEYS[2], current) end
  redis.call('SET', KEYS[1], tag)
  status = 'advanced'
end
for i = 3, 2 + ngen do redis.call('SET', KEYS[i], ARGV[i + 2], 'NX') end
for i = 3 + ngen, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 2], 'EX', ttl) end
return {status, current}
"""


class PredictionStore:
    """Stores encoded predictions per model namespace; invalidation is a generation swap."""

    def __init__(self, client: redis.Redis, keyspace: KeySpace) -> None:
        self.client = client
        self.keyspace = keyspace
        self._save_script = client.register_script(_SAVE_SCRIPT)

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
        entries: Sequence[tuple[str, bytes]],
        *,
        ttl_seconds: int,
        version: str = "",
        follow_versions: bool = False,
    ) -> SaveOutcome:
        """Write ``(digest, value)`` pairs with a TTL in one atomic round trip.

        With ``follow_versions``, ``version`` (the tag of the model that computed the
        values) decides whether they are stored and which version the cache follows.
        """
        keys = [
            self.keyspace.followed_version(namespace),
            self.keyspace.retired_versions(namespace),
            *(key for key, _ in lookup.new_generation_keys),
            *(self.keyspace.entry(namespace, digest) for digest, _ in entries),
        ]
        args: list[str | bytes | int] = [
            version,
            "1" if follow_versions else "0",
            ttl_seconds,
            len(lookup.new_generation_keys),
            *(token for _, token in lookup.new_generation_keys),
            *(value for _, value in entries),
        ]
        try:
            status, previous = cast(list[bytes], self._save_script(keys=keys, args=args))
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc
        return SaveOutcome(status.decode(), previous.decode())

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


def new_generation_token() -> str:
    """A random generation token; random (not a counter) so a lost key cannot repeat an old one."""
    return secrets.token_hex(8)
