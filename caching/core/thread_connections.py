"""A Redis connection of each thread's own for the hit's one command, outside redis-py's pool.

redis-py's client layer costs a command far more than its round trip: on the bench machine a
GET through ``Redis.get`` takes about 86 us of CPU, the same GET on one of its ``Connection``
objects about 27 us (``bench/results/hit_path.md``). Most of the difference is the pool (a
lock, the fork check, connection-state metrics on checkout and return) and the command layer
(deprecation wrappers, retries, operation metrics). A hit makes one command, so
:class:`ThreadConnections` gives each thread a connection of its own, built from the client's
pool settings (address, database, AUTH, TLS, timeouts), and sends the command on it directly.

The pool checks a connection on each checkout (a non-blocking peek: three system calls) for one
the server closed meanwhile (an idle timeout, a restart). Here the command is sent at once, and
only when the connection it was sent on, open since an earlier command, turns out to be closed
(a plain ``ConnectionError``) is it sent again, once, on a new one: :meth:`ThreadConnections.read`
sends reads alone, which are safe to repeat. On any other error the connection is dropped and
reopened by the next command. Nothing else is retried (a timeout is not): as with the client,
an outage fails fast. A forked child makes
its own (the runtime is rebuilt there anyway). These connections are not counted by the pool's
``max_connections``: a web process holds one per thread that serves hits, besides its pool.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import redis
from redis.maint_notifications import MaintNotificationsConfig


class ThreadConnections:
    """Per-thread connections to the Redis server of ``client``, for single commands."""

    def __init__(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        self._connection_class = pool.connection_class
        self._connection_kwargs = dict(pool.connection_kwargs)
        # Maintenance notifications are the pool's to follow; their handlers would also tie each
        # connection into a reference cycle, keeping a finished thread's socket open until a GC.
        self._connection_kwargs.pop("maint_notifications_pool_handler", None)
        self._connection_kwargs["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
        self._local = threading.local()
        self._made: weakref.WeakSet[redis.connection.AbstractConnection] = weakref.WeakSet()
        self._lock = threading.Lock()

    def read(self, *args: Any) -> Any:
        """Send one read command on this thread's connection and return its reply (bytes, not decoded).

        Only commands that change nothing may be sent here: one may reach the server twice.
        Raises what redis-py raises: ``ConnectionError``, ``TimeoutError``, ``ResponseError``.
        """
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.pid != os.getpid():  # a forked child never shares one
            connection = self._local.connection = self._new()
        idle = connection.is_connected  # open since an earlier command: the server may have closed it
        while True:
            try:
                connection.send_command(*args)
                return connection.read_response()
            except redis.ResponseError:
                raise  # an error reply: the connection is in step, and stays
            except redis.ConnectionError as exc:
                connection.disconnect()
                # Subclasses are replies (LOADING, a refused AUTH) on a connection still open.
                if not idle or type(exc) is not redis.ConnectionError:
                    raise
                idle = False  # once more, on a new connection (send_command opens it)
            except BaseException:
                connection.disconnect()  # mid-command: what it would read next is not this reply
                raise

    def close(self) -> None:
        """Disconnect every connection made so far (each reconnects if used again)."""
        with self._lock:
            made = list(self._made)
        for connection in made:
            connection.disconnect()  # type: ignore[no-untyped-call]

    def _new(self) -> redis.connection.AbstractConnection:
        connection: redis.connection.AbstractConnection = self._connection_class(**self._connection_kwargs)
        with self._lock:
            self._made.add(connection)
        return connection
