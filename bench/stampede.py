"""A stampede: N clients send the same new instance at once; how many calls does the model get?

For each N (1, 10, 50, 100 by default) and each round, a new instance nobody asked for before is
sent by N clients together: each client connects first, then all are released at once. The model
server (tests/support/model_server.py) answers after a fixed delay and counts the calls it
received; single-flight should make it one per round, the other clients waiting for that answer.
Latency is each client's, from its release to its answer. Runs on this machine in processes this
script starts (its own Redis, SQLite file, model server, one predcache gunicorn: 2 workers x 4
threads, so past 8 clients the requests queue in gunicorn). Prints a table and writes
bench/results/stampede.md, with a plot of the backend calls, bench/results/stampede.png.

    .venv/bin/python bench/stampede.py [--clients 1,10,50,100] [--rounds 3] [--model-ms 100]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import urllib3  # noqa: E402

from bench import machine, plots  # noqa: E402
from bench.batch import Predcache  # noqa: E402
from bench.hit_path import percentile, table  # noqa: E402
from tests.support.processes import model_server  # noqa: E402

WARMUP_ROUNDS, WARMUP_CLIENTS = 2, 16


def stampede(predcache: Predcache, bodies: list[bytes]) -> list[tuple[float, str | None]]:
    """A connection per body, each sending its body, all together; each one's (latency in ms, X-Cache)."""
    clients = len(bodies)
    connections = [
        http.client.HTTPConnection("127.0.0.1", predcache.server.port, timeout=60) for _ in range(clients)
    ]
    for connection in connections:
        connection.connect()
    release = threading.Event()
    answers: list[tuple[float, str | None]] = [(0.0, None)] * clients
    failures: list[str] = []

    def client(slot: int) -> None:
        connection = connections[slot]
        release.wait()
        start = time.perf_counter()
        connection.request("POST", "/v1/models/echo:predict", body=bodies[slot], headers=predcache.headers)
        response = connection.getresponse()
        content = response.read()
        answers[slot] = ((time.perf_counter() - start) * 1000, response.getheader("X-Cache"))
        if response.status != 200:
            failures.append(f"{response.status}: {content[:200]!r}")
        connection.close()

    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # every thread is waiting on the release
    release.set()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} of {clients} requests failed, e.g. {failures[0]}")
    return answers


def instance_body(*fields: object) -> bytes:
    """A request for one instance made of ``fields``."""
    return orjson.dumps({"instances": [{"stampede": list(fields)}]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,10,50,100", help="concurrent clients, comma-separated")
    parser.add_argument(
        "--rounds", type=int, default=3, help="stampedes per client count, each a new instance"
    )
    parser.add_argument("--model-ms", type=float, default=100.0, help="the model's delay per call")
    args = parser.parse_args()
    counts = [int(count) for count in args.clients.split(",")]
    rows = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="predcache-bench-") as tmp:
        model_url = stack.enter_context(model_server())
        model = urllib3.PoolManager()
        predcache = Predcache(stack, Path(tmp), model_url)
        model.request("POST", f"{model_url}/control", json={"delay": args.model_ms / 1000})
        run = uuid.uuid4().hex  # instances never seen before, whatever ran earlier
        # Misses of distinct instances first, so that the rounds time stampedes, not a worker's first
        # use of the model (loading it, connecting to the model server).
        for warmup in range(WARMUP_ROUNDS):
            stampede(
                predcache, [instance_body(run, "warm-up", warmup, slot) for slot in range(WARMUP_CLIENTS)]
            )
        for clients in counts:
            calls_per_round, answers = [], []
            for round_ in range(args.rounds):
                model.request("POST", f"{model_url}/reset-calls", json={})
                answers += stampede(predcache, [instance_body(run, clients, round_, 0)] * clients)
                calls_per_round.append(len(model.request("GET", f"{model_url}/calls").json()["calls"]))
            rows.append((clients, calls_per_round, answers))
            print(f"  {clients} clients: backend calls per round {calls_per_round}", file=sys.stderr)
    report(rows, args)


def report(rows: list[tuple[int, list[int], list[tuple[float, str | None]]]], args: Any) -> None:
    command = " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    plot = plots.lines(
        "stampede",
        title=f"Stampede: N clients send one new instance at once (model {args.model_ms:g} ms)",
        xs=[clients for clients, _, _ in rows],
        series={
            "backend calls (most in a round)": [max(calls) for _, calls, _ in rows],
            "N: one call per client, for reference": [clients for clients, _, _ in rows],
        },
        xlabel="concurrent clients (N)",
        ylabel="backend calls per stampede",
        log=True,
    )
    body = []
    for clients, calls, answers in rows:
        latencies = sorted(latency for latency, _ in answers)
        statuses = [status or "none" for _, status in answers]
        body.append(
            [
                str(clients),
                " / ".join(str(count) for count in calls),
                ", ".join(f"{statuses.count(status)} {status}" for status in sorted(set(statuses))),
                f"{latencies[0]:.1f}",
                f"{percentile(latencies, 0.5):.1f}",
                f"{percentile(latencies, 0.99):.1f}",
                f"{latencies[-1]:.1f}",
                f"{statistics.mean(latencies):.1f}",
            ]
        )
    single = all(max(calls) == 1 for _, calls, _ in rows)
    lines = [
        "# Stampede: concurrent identical misses",
        "",
        f"`{command}` on {machine.description()}, {time.strftime('%Y-%m-%d')}. {args.rounds} rounds per "
        f"client count, each a new instance sent by N clients released together; the model answers "
        f"in {args.model_ms:g} ms. Before them, {WARMUP_ROUNDS} x {WARMUP_CLIENTS} concurrent misses of "
        "distinct instances, so every gunicorn worker has its model client and connection. "
        "predcache: gunicorn gthread, 2 workers x 4 threads, so past 8 "
        "clients requests queue in gunicorn; the Python clients share the cores.",
        "",
        *table(
            [
                "clients (N)",
                "backend calls per round",
                "X-Cache (all rounds)",
                "min ms",
                "p50 ms",
                "p99 ms",
                "max ms",
                "mean ms",
            ],
            body,
        ),
        "",
        f"- single-flight: {'' if single else 'NOT '}one backend call per stampede in every round",
        "",
        plots.link(plot),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (REPO / "bench" / "results" / "stampede.md").write_text(text)


if __name__ == "__main__":
    main()
