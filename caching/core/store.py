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
    """

    generation: str
    new_generation_keys: tuple[tuple[str, str], ...]
    raw_values: list[bytes | None]


class PredictionStore:
    """Stores encoded predictions per model namespace; invalidation is a generation swap."""

    def __init__(self, client: redis.Redis, keyspace: KeySpace) -> None:
        self.client = client
        self.keyspace = keyspace

    def lookup(self, namespace: str, model_version: str, digests: Sequence[str]) -> Lookup:
        """Read both generations and every entry with a single MGET."""
        generation_keys = (
            self.keyspace.generation(namespace),
            self.keyspace.version_generation(namespace, model_version),
        )
        keys = [*generation_keys, *(self.keyspace.entry(namespace, d) for d in digests)]
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
        return Lookup(".".join(tokens), tuple(new_keys), values[len(generation_keys) :])

    def save(
        self,
        namespace: str,
        lookup: Lookup,
        entries: Sequence[tuple[str, bytes]],
        *,
        ttl_seconds: int,
    ) -> None:
        """Write ``(digest, value)`` pairs with a TTL in one pipelined round trip."""
        pipe = self.client.pipeline(transaction=False)
        for key, token in lookup.new_generation_keys:
            pipe.set(key, token, nx=True)
        for digest, value in entries:
            pipe.set(self.keyspace.entry(namespace, digest), value, ex=ttl_seconds)
        try:
            pipe.execute()
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc

    def purge(self, namespace: str, model_version: str | None = None) -> None:
        """Make every entry of the model (or of one of its versions) unreachable at once."""
        key = (
            self.keyspace.generation(namespace)
            if model_version is None
            else self.keyspace.version_generation(namespace, model_version)
        )
        try:
            self.client.set(key, new_generation_token())
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc

    def generation(self, namespace: str) -> str | None:
        """The current model-wide generation token of ``namespace``, if it has one."""
        try:
            value = cast(bytes | None, self.client.get(self.keyspace.generation(namespace)))
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(str(exc)) from exc
        return None if value is None else value.decode()


def new_generation_token() -> str:
    """A random generation token; random (not a counter) so a lost key cannot repeat an old one."""
    return secrets.token_hex(8)
