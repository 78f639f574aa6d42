"""Soak: a mixed load for a while, then what the web processes and Redis hold, against the start.

Client threads send hits (a hot set of instances) and misses (new instances) through one
predcache gunicorn; beside them, in turns, the whole model is purged (the admin API), some
instances are purged, a warm runs (`predcache warm`) and the model's policy is edited (`predcache
models upsert --ttl`). After a warm-up the memory of the gunicorn processes (RSS), their open
files and Redis's memory and keys are read; at the end again. Growth should be the entries
themselves: the report divides Redis's growth by the keys added. Errors are any answer but 200.
Runs in processes this script starts (its own Redis, SQLite file, model server, gunicorn).
Prints a table and writes bench/results/soak.md.

    .venv/bin/python bench/soak.py [--minutes 10] [--clients 4] [--warm-up 30]
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import psutil  # noqa: E402
import redis  # noqa: E402

from bench import machine  # noqa: E402
from bench.batch import Predcache  # noqa: E402
from bench.hit_path import table  # noqa: E402
from tests.support.processes import model_server  # noqa: E402

HOT_INSTANCES = 500
HIT_SHARE = 0.8
OPERATIONS_EVERY = 5.0  # seconds between the side operations, taken in turns


def snapshot(predcache: Predcache) -> dict[str, float]:
    """What the web processes and Redis hold now."""
    master = psutil.Process(predcache.server.process.pid)
    processes = [master, *master.children()]
    info = redis.Redis.from_url(predcache.redis.url).info()
    return {
        "web RSS (MiB)": sum(p.memory_info().rss for p in processes) / 2**20,
        "web open files": sum(p.num_fds() for p in processes),
        "web threads": sum(p.num_threads() for p in processes),
        "Redis used_memory (MiB)": info["used_memory"] / 2**20,
        "Redis keys": sum(db["keys"] for name, db in info.items() if name.startswith("db")),
    }


class Clients:
    """Closed-loop clients sending hits and misses until told to stop; they count every answer."""

    def __init__(self, predcache: Predcache, count: int) -> None:
        self.predcache = predcache
        self.stop = threading.Event()
        self.answers: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.new = itertools.count(HOT_INSTANCES)
        self.threads = [threading.Thread(target=self._run, args=(seed,)) for seed in range(count)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        connection = http.client.HTTPConnection("127.0.0.1", self.predcache.server.port, timeout=30)
        while not self.stop.is_set():
            if rng.random() < HIT_SHARE:
                kind, instance = "hot", rng.randrange(HOT_INSTANCES)
            else:
                kind, instance = "new", next(self.new)
            body = orjson.dumps({"instances": [[instance, instance / 7]]})
            try:
                connection.request("POST", "/v1/models/echo:predict", body, self.predcache.headers)
                response = connection.getresponse()
                response.read()
                outcome = f"{kind} {response.status} {response.getheader('X-Cache')}"
            except (OSError, http.client.HTTPException) as exc:
                outcome = f"{kind} error {exc.__class__.__name__}"
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.predcache.server.port, timeout=30)
            with self.lock:
                self.answers[outcome] += 1
        connection.close()


class Operations:
    """The side load, one operation every few seconds in turns: purges, a warm, a policy edit."""

    def __init__(self, predcache: Predcache, admin_headers: dict[str, str], warm_file: Path) -> None:
        self.predcache = predcache
        self.admin_headers = admin_headers
        self.warm_file = warm_file
        self.stop = threading.Event()
        self.done: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.thread = threading.Thread(target=self._run)
        self.rng = random.Random(99)

    def _run(self) -> None:
        operations = itertools.cycle(
            [("purge", self._purge_model), ("instance purge", self._purge_some), ("warm", self._warm),
             ("policy edit", self._edit_policy)]
        )  # fmt: skip
        while not self.stop.wait(OPERATIONS_EVERY):
            name, operation = next(operations)
            try:
                operation()
                self.done[name] += 1
            except Exception as exc:  # counted and shown: a soak must not stop at the first one
                self.failed[f"{name}: {exc.__class__.__name__}"] += 1

    def _admin(self, body: dict[str, Any]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.predcache.server.port, timeout=30)
        try:
            connection.request("POST", "/v1/admin/models/echo:purge", orjson.dumps(body), self.admin_headers)
            response = connection.getresponse()
            answer = response.read()
            if response.status not in (200, 202):
                raise RuntimeError(f"purge answered {response.status}: {answer[:200]!r}")
        finally:
            connection.close()

    def _purge_model(self) -> None:
        self._admin({})

    def _purge_some(self) -> None:
        picked = self.rng.sample(range(HOT_INSTANCES), 20)
        self._admin({"instances": [[n, n / 7] for n in picked]})

    def _warm(self) -> None:
        self.predcache.manage("predcache", "warm", "echo", "--file", str(self.warm_file))

    def _edit_policy(self) -> None:
        ttl = str(self.rng.choice([60, 300, 3600]))
        self.predcache.manage("predcache", "models", "upsert", "echo", "--ttl", ttl)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the mixed load runs")
    parser.add_argument("--clients", type=int, default=4, help="client threads sending predictions")
    parser.add_argument("--warm-up", type=float, default=30.0, help="seconds before the first snapshot")
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="predcache-bench-soak-") as tmp:
        work = Path(tmp)
        predcache = Predcache(stack, work, stack.enter_context(model_server()))
        admin_key = predcache.manage("predcache", "keys", "create", "soak-admin", "--admin")
        admin_headers = {
            **predcache.headers,
            "Authorization": f"Api-Key {admin_key.strip().splitlines()[-1]}",
        }
        warm_file = work / "warm.jsonl"
        warm_file.write_text("".join(f"[{n}, {n / 7}]\n" for n in range(HOT_INSTANCES)))

        clients = Clients(predcache, args.clients)
        operations = Operations(predcache, admin_headers, warm_file)
        clients.start()
        operations.thread.start()
        started = time.monotonic()
        time.sleep(args.warm_up)  # the load settles (a bench's pacing, not a test's synchronisation)
        first = snapshot(predcache)
        time.sleep(max(0.0, args.minutes * 60 - args.warm_up))
        last = snapshot(predcache)
        operations.stop.set()
        operations.thread.join()
        clients.join()
        elapsed = time.monotonic() - started
    report(args, elapsed, first, last, clients, operations)


def report(
    args: argparse.Namespace,
    elapsed: float,
    first: dict[str, float],
    last: dict[str, float],
    clients: Clients,
    operations: Operations,
) -> None:
    answered = sum(clients.answers.values())
    errors = sum(count for outcome, count in clients.answers.items() if " 200 " not in f"{outcome} ")
    errors += sum(operations.failed.values())
    added_keys = last["Redis keys"] - first["Redis keys"]
    grown = (last["Redis used_memory (MiB)"] - first["Redis used_memory (MiB)"]) * 2**20
    rows = [
        [name, *(f"{value:,.{1 if 'MiB' in name else 0}f}" for value in (first[name], last[name])),
         f"{last[name] - first[name]:+,.{1 if 'MiB' in name else 0}f}"]
        for name in first
    ]  # fmt: skip
    lines = [
        "# Soak: a mixed load, then what the processes hold",
        "",
        f"`bench/soak.py --minutes {args.minutes:g} --clients {args.clients} --warm-up {args.warm_up:g}` "
        f"on {machine.description()}, {time.strftime('%Y-%m-%d')}: {elapsed / 60:.1f} minutes; one predcache "
        "gunicorn (gthread, 2 workers x 4 threads), its own Redis and SQLite, an HTTP model. Clients: "
        f"{HIT_SHARE:.0%} requests for a hot set of {HOT_INSTANCES} instances, the rest a new instance each. "
        f"Every {OPERATIONS_EVERY:g} s, in turns: a whole-model purge, a purge of 20 instances (both "
        "through the admin API), `predcache warm` of the hot set, `predcache models upsert --ttl`.",
        "",
        "## Start (after the warm-up) and end",
        "",
        *table(["", "start", "end", "change"], rows),
        "",
        f"- Redis grew by {grown / 2**20:,.2f} MiB for {added_keys:,.0f} more keys"
        + (f": {grown / added_keys:,.0f} bytes a key" if added_keys > 0 else "")
        + " (entries of new instances live for their TTL; purged ones until reclaimed or expired).",
        f"- Requests answered: {answered:,} ({answered / elapsed:,.0f}/s)",
        *(f"  - {outcome}: {count:,}" for outcome, count in sorted(clients.answers.items())),
        "- Side operations done: "
        + ", ".join(f"{name} {count}" for name, count in sorted(operations.done.items())),
        f"- **Errors: {errors}**"
        + (
            " (" + ", ".join(f"{name} {count}" for name, count in sorted(operations.failed.items())) + ")"
            if operations.failed
            else ""
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (REPO / "bench" / "results" / "soak.md").write_text(text)
    print("wrote bench/results/soak.md")


if __name__ == "__main__":
    main()
