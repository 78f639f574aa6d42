"""A real Redis Cluster for tests: redis-server processes in cluster mode on loopback ports.

:class:`RedisCluster` starts ``primaries`` primaries, each with ``replicas`` replicas, joins
them with CLUSTER MEET, gives each primary an equal range of the 16384 slots (CLUSTER
ADDSLOTS), makes the replicas follow (CLUSTER REPLICATE), and waits until every node reports
``cluster_state:ok`` and knows every other one in its place. It keeps nothing on disk but the
nodes' own cluster files, in its work directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

from predcache_site.local_redis import RedisServer, embedded_redis_binary, free_port, wait_until
from tests.support.tls import TestPki

SLOTS = 16384
BUS_PORT_OFFSET = 10000


class TlsNodeServer(RedisServer):
    """A cluster node speaking TLS only, to clients and on the cluster bus: the system's redis-server."""

    def __init__(self, workdir: Path, port: int, arguments: tuple[str, ...], pki: TestPki) -> None:
        super().__init__(workdir, port=port, arguments=arguments)
        self.pki = pki
        self.password = ""

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = ["redis-server", "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1"]
        command += [*self.pki.server_arguments(), "--tls-cluster", "yes", "--tls-replication", "yes"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir), *self.arguments]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, timeout=10, what="a TLS redis-server")
        return self

    def _answers(self) -> bool:
        try:
            with node_client(self.port, self.pki, self.password, timeout=0.5) as client:
                return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False


def node_client(port: int, pki: TestPki | None, password: str, *, timeout: float = 5) -> redis.Redis:
    tls = {"ssl": True, "ssl_ca_data": pki.ca_pem, "ssl_check_hostname": False} if pki else {}
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password or None,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        **tls,  # type: ignore[arg-type]
    )


@dataclass
class ClusterNode:
    server: RedisServer
    pki: TestPki | None = None
    password: str = ""
    node_id: str = ""

    @property
    def port(self) -> int:
        return self.server.port

    def client(self) -> redis.Redis:
        """A plain client of this one node (no cluster routing: it answers MOVED for others' keys)."""
        return node_client(self.port, self.pki, self.password)

    def command(self, *args: object) -> object:
        with self.client() as client:
            return client.execute_command(*args)


class RedisCluster:
    """A Redis Cluster of our own; ``url`` names its first node, as ``REDIS_URL`` names any node.

    With ``pki`` its nodes speak TLS only (the system's redis-server, which is built with it),
    with the certificates of :func:`tests.support.tls.make_test_pki`; with ``password`` user
    ``default`` needs it (replicas too, to follow their primaries).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 5000,
        pki: TestPki | None = None,
        password: str = "",
        arguments: Sequence[str] = (),
    ) -> None:
        if password and pki is None:
            raise ValueError("a password needs pki here (RedisServer's start-up check sends none)")
        self.workdir = workdir
        self.primary_count = primaries
        self.replica_count = replicas
        self.pki = pki
        options = ("--cluster-enabled", "yes", "--cluster-node-timeout", str(node_timeout_ms))
        # A replica promoted after a failover serves at once, and a lone dead primary with no
        # replica does not stop the other slots from being served.
        options += ("--cluster-require-full-coverage", "no")
        options += ("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")  # replicas in sync fast
        if password:
            options += ("--requirepass", password, "--masterauth", password)
        options += tuple(arguments)
        self.nodes = []
        for index in range(primaries * (1 + replicas)):
            workdir_of_node, port = workdir / f"node{index}", cluster_port()
            server: RedisServer
            if pki is None:
                server = RedisServer(workdir_of_node, port=port, arguments=options)
            else:
                server = TlsNodeServer(workdir_of_node, port, options, pki)
                server.password = password
            server.arguments += ("--cluster-config-file", str(workdir_of_node / "nodes.conf"))
            self.nodes.append(ClusterNode(server, pki, password))

    @property
    def url(self) -> str:
        return f"{'rediss' if self.pki else 'redis'}://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> RedisCluster:
        try:
            for node in self.nodes:
                node.server.start()
                node.node_id = str(node.command("CLUSTER", "MYID"), "ascii")
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self) -> None:
        primaries, replicas = self.nodes[: self.primary_count], self.nodes[self.primary_count :]
        for epoch, node in enumerate(primaries, start=1):
            node.command("CLUSTER", "SET-CONFIG-EPOCH", epoch)  # distinct epochs: no collision to settle
        first = self.nodes[0]
        for node in self.nodes[1:]:
            first.command("CLUSTER", "MEET", "127.0.0.1", node.port)
        for index, node in enumerate(primaries):
            low = index * SLOTS // self.primary_count
            high = (index + 1) * SLOTS // self.primary_count
            node.command("CLUSTER", "ADDSLOTS", *range(low, high))
        wait_until(self._all_met, timeout=30, what="the cluster nodes to meet")
        for index, node in enumerate(replicas):
            node.command("CLUSTER", "REPLICATE", primaries[index % self.primary_count].node_id)
        self.wait_healthy()

    def _all_met(self) -> bool:
        for node in self.nodes:
            listed = str(node.command("CLUSTER", "NODES"), "utf-8").splitlines()
            if len(listed) != len(self.nodes) or any("handshake" in line for line in listed):
                return False
        return True

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until every live node says the cluster is ok and every replica is in sync with its primary."""
        wait_until(self._healthy, timeout=timeout, what="the cluster to be ok")

    def _healthy(self) -> bool:
        live = [node for node in self.nodes if self.alive(node)]
        for node in live:
            info = str(node.command("CLUSTER", "INFO"), "utf-8")
            if "cluster_state:ok" not in info:
                return False
            with node.client() as client:
                replication = client.info("replication")
            if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                return False
        views = {self._roles(node) for node in live}
        return len(views) == 1  # all agree on who is a primary of what

    def _roles(self, node: ClusterNode) -> tuple[str, ...]:
        lines = str(node.command("CLUSTER", "NODES"), "utf-8").splitlines()
        roles = []
        for line in lines:
            fields = line.split()
            flags = fields[2].replace("myself,", "")
            if "fail" not in flags:
                roles.append(f"{fields[0]} {flags} {fields[3]} {' '.join(fields[8:])}")
        return tuple(sorted(roles))

    def alive(self, node: ClusterNode) -> bool:
        process = node.server.process
        return process is not None and process.poll() is None

    def primaries(self) -> list[ClusterNode]:
        """The live nodes that serve slots now (a promoted replica among them after a failover)."""
        found = []
        for node in self.nodes:
            if self.alive(node):
                with node.client() as client:
                    if client.info("replication")["role"] == "master":
                        found.append(node)
        return found

    def node_of_slot(self, slot: int) -> ClusterNode:
        """The live primary serving ``slot``, as the cluster says."""
        asked = self.primaries()[0]
        for low, high, primary, *_ in asked.command("CLUSTER", "SLOTS"):  # type: ignore[union-attr]
            if low <= slot <= high:
                return next(node for node in self.nodes if node.port == int(primary[1]))
        raise LookupError(f"no live primary serves slot {slot}")

    def replica_of(self, primary: ClusterNode) -> ClusterNode:
        for node in self.nodes:
            if node is not primary and self.alive(node):
                with node.client() as client:
                    info = client.info("replication")
                if info["role"] == "slave" and info["master_port"] == primary.port:
                    return node
        raise LookupError(f"no live replica of {primary.port}")

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL, as a crashed machine: no goodbye to the cluster, no flush."""
        assert node.server.process is not None
        os.kill(node.server.process.pid, signal.SIGKILL)
        node.server.process.wait(timeout=10)

    def stop(self) -> None:
        for node in self.nodes:
            node.server.stop()

    def remove_files(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def cluster_port() -> int:
    """A free loopback port whose cluster bus port (10000 above it, redis-server 6) is free as well."""
    for _ in range(100):
        port = free_port()
        if port + BUS_PORT_OFFSET > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + BUS_PORT_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def cluster_binary_problem() -> str | None:
    """Why no Redis Cluster can be started here, or None if the embedded redis-server can run one."""
    try:
        binary = embedded_redis_binary()
    except ImportError as exc:
        return f"no redis-server binary: {exc}"
    if not Path(binary).is_file():
        return f"no redis-server binary at {binary}"
    return None


def wait_for(predicate, *, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it holds, or fail the test saying what did not happen."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
