"""The hits' own per-thread Redis connections, against a real redis-server of the test's own."""

from __future__ import annotations

import gc
import os
import threading

import pytest
import redis

from caching.core.store import redis_client
from caching.core.thread_connections import ThreadConnections
from predcache_site.local_redis import wait_until
from tests.support.processes import RedisServer


@pytest.fixture
def server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def connections(server):
    client = redis_client(server.url, socket_timeout=1, connect_timeout=1)
    client.set("k", b"v")
    client.connection_pool.disconnect()  # from here on, the server's only clients are the threads'
    yield ThreadConnections(client)
    client.close()


def clients(server) -> list[dict]:
    observer = redis.Redis.from_url(server.url)
    try:
        return [entry for entry in observer.client_list() if entry["id"] != str(observer.client_id())]
    finally:
        observer.close()


def test_a_thread_reuses_its_connection_and_another_thread_gets_its_own(server, connections):
    assert connections.read("MGET", "k", "absent") == [b"v", None]
    assert connections.read("GET", "k") == b"v"
    assert len(clients(server)) == 1  # this thread's, opened once

    gc.disable()  # the other thread's connection must close with the thread, not at a collection
    try:
        replies = []
        thread = threading.Thread(target=lambda: replies.append(connections.read("GET", "k")))
        thread.start()
        thread.join()
        assert replies == [b"v"]
        wait_until(
            lambda: len(clients(server)) == 1, timeout=5, what="the finished thread's connection to close"
        )
    finally:
        gc.enable()

    connections.close()
    assert clients(server) == []


def test_a_read_on_a_connection_the_server_closed_is_sent_once_more_on_a_new_one(server, connections):
    assert connections.read("GET", "k") == b"v"
    observer = redis.Redis.from_url(server.url)
    killed = observer.client_kill_filter(_type="normal", skipme=True)
    assert killed == 1
    # The read is not lost to the closed socket: it reaches the server once, on a new connection.
    assert connections.read("GET", "k") == b"v"
    assert observer.info("commandstats")["cmdstat_get"]["calls"] == 2
    observer.close()


def test_a_restarted_redis_is_reached_on_the_next_command(server, connections):
    assert connections.read("GET", "k") == b"v"
    server.stop()
    with pytest.raises(redis.ConnectionError):
        connections.read("GET", "k")
    server.start()
    assert connections.read("GET", "k") is None  # a new, empty server, reached at once


def test_an_error_reply_keeps_the_connection_and_a_timeout_drops_it(server, connections):
    with pytest.raises(redis.ResponseError):
        connections.read("NOSUCHCOMMAND")
    assert connections.read("GET", "k") == b"v"
    before = {entry["id"] for entry in clients(server)}

    # A command the server answers after the socket timeout: its late reply must not be read
    # as the next command's, and a timeout is not sent again.
    with pytest.raises(redis.TimeoutError):
        connections.read("BLPOP", "nothing-comes", "1.5")
    assert connections.read("GET", "k") == b"v"
    observer = redis.Redis.from_url(server.url)
    assert observer.info("commandstats")["cmdstat_blpop"]["calls"] == 1
    observer.close()
    after = {entry["id"] for entry in clients(server)}
    assert after and not after & before


def test_a_forked_child_opens_its_own_connection(server, connections):
    assert connections.read("GET", "k") == b"v"
    (parent,) = clients(server)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: one command, then out without running the parent's cleanup
        try:
            reply = connections.read("CLIENT", "ID")
            os.write(writer, str(reply).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        child_client_id = pipe.read()
    os.waitpid(child, 0)
    assert child_client_id and child_client_id != parent["id"]
    assert connections.read("GET", "k") == b"v"  # the parent's connection is still in step
    assert parent["id"] in {entry["id"] for entry in clients(server)}
