"""Redis Cluster: a client that connects on first use, and walking the keys of every primary.

On a cluster (``REDIS_CLUSTER=true``) the one client factory (:func:`caching.core.store.redis_client`)
returns a :class:`LazyRedisCluster`: redis-py's ``RedisCluster`` reads the cluster's slot map when
it is built, so building it while the cluster is unreachable fails. A process must start anyway
(Redis is an accelerator, predictions then go to the model), so the client is built on the
first command, and again on the next one after a failed build.

Everything else about the cluster is redis-py's: a command goes to the primary owning its keys'
slot, MOVED and ASK redirections are followed, and after a connection error the slot map is read
again (one retry, no backoff: a failover's promoted replica is found, an outage fails fast).
Every key of a model shares a hash tag (:class:`caching.core.keys.KeySpace`), so a model's
commands, scripts and transactions stay in one slot; only walking keys (SCAN) spans nodes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import redis
from redis.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import Script


class LazyRedisCluster:
    """A ``RedisCluster`` built by ``build`` on first use; every attribute is the built client's.

    A failed build raises ``redis.ConnectionError`` (the client's own errors are not all
    ``RedisError``), so callers fail open as on any outage, and the next use tries again.
    """

    def __init__(self, build: Callable[[], RedisCluster]) -> None:
        self._build = build
        self._client: RedisCluster | None = None
        self._lock = threading.Lock()

    def connected(self) -> RedisCluster:
        """The built client, built now if it is not yet."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = self._build()
                    except redis.exceptions.RedisClusterException as exc:
                        raise redis.ConnectionError(f"Redis Cluster unreachable: {exc}") from exc
                client = self._client
        return client

    def register_script(self, script: str) -> Script:
        """A script run on the cluster when called (registering it needs no connection)."""
        # Given as bytes, redis-py hashes it as it is, without asking the client for its encoder.
        return Script(self, script.encode())  # type: ignore[arg-type]

    def close(self) -> None:
        """Close the built client, if it was built; a later use builds a new one."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connected(), name)


# What the one client factory returns: a Redis, or on a cluster a client built on first use.
RedisClient = redis.Redis | RedisCluster | LazyRedisCluster
# What its pipeline() returns. On a cluster a pipeline sends each node its commands (one round
# trip per node); with transaction=True all its keys must be in one slot.
RedisPipeline = redis.client.Pipeline | ClusterPipeline


def node_clients(client: RedisClient) -> list[redis.Redis]:
    """A client of each server holding keys: the one Redis, or each primary of a cluster."""
    if isinstance(client, redis.Redis):
        return [client]
    return [client.get_redis_connection(node) for node in client.get_primaries()]


def scan_keys(client: RedisClient, *, match: str, count: int) -> Iterator[tuple[list[bytes | str], bool]]:
    """SCAN every key matching ``match`` on every server holding keys, one SCAN call per step.

    Yields each call's keys and whether the walk is complete with it. On a cluster this walks
    every primary, not only the one owning the pattern's slot: while a slot migrates between
    primaries (a resharding), its keys are on both. A key may come twice (SCAN's own guarantee).
    """
    servers = node_clients(client)
    for index, server in enumerate(servers):
        cursor = 0
        while True:
            cursor, keys = server.scan(cursor, match=match, count=count)
            yield keys, cursor == 0 and index == len(servers) - 1
            if cursor == 0:
                break


def ping(client: RedisClient) -> None:
    """PING the one Redis, or every primary of a cluster (each serves a share of the models).

    On a cluster a primary that does not answer makes the client read the slot map again,
    so once its replica has taken over, the next ping finds it.
    """
    if isinstance(client, redis.Redis):
        client.ping()
    else:
        client.ping(target_nodes=RedisCluster.PRIMARIES)
