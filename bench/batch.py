"""Benchmark cached batches through gunicorn: per-request and per-instance latency for 1 to 1,000 instances.

Every instance of each batch is cached (the batch was asked once before), so each request is a
full HIT: one Redis MGET for all its instances. Runs on this machine in processes this script
starts (its own Redis, SQLite file, model server, one predcache gunicorn). Prints a table and
writes bench/results/batch.md, with a plot of the cost per instance, bench/results/batch.png.

    .venv/bin/python bench/batch.py [--seconds 5] [--sizes 1,10,100,1000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from bench import machine, plots  # noqa: E402
from bench.hit_path import Server, call, load, percentile, table  # noqa: E402
from predcache_site.local_redis import RedisServer  # noqa: E402
from tests.support.processes import model_server  # noqa: E402


class Predcache:
    """A predcache installation of this script's own: Redis, SQLite, an http model ``echo``, a gunicorn."""

    def __init__(self, stack: ExitStack, work: Path, model_url: str, **env: str) -> None:
        self.redis = RedisServer(work / "redis").start()
        stack.callback(self.redis.stop)
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{work / 'bench.sqlite3'}",
            "REDIS_URL": self.redis.url,
            "DJANGO_SECRET_KEY": "bench",
            "PREDCACHE_MODEL_DIR": str(work / "models"),
            "PYTHONPATH": str(REPO),
            "LOG_LEVEL": "WARNING",
            **env,
        }
        self.manage("migrate", "-v0")
        self.manage(
            "predcache", "models", "upsert", "echo", "--backend", "http", "--target", f"{model_url}/predict"
        )
        key = self.manage("predcache", "keys", "create", "bench").strip().splitlines()[-1]
        self.headers = {"Content-Type": "application/json", "Authorization": f"Api-Key {key}"}
        self.server = Server(self.env, "predcache_site.settings", "/healthz")
        stack.callback(self.server.stop)

    def manage(self, *command: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=REPO,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def predict(self, body: bytes) -> tuple[int, str | None, bytes]:
        return call(self.server.port, "POST", "/v1/models/echo:predict", body, self.headers)


def batch_body(size: int, rng: random.Random) -> bytes:
    return orjson.dumps({"instances": [[round(rng.uniform(4, 8), 6) for _ in range(4)] for _ in range(size)]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each load run")
    parser.add_argument("--sizes", default="1,10,100,1000", help="batch sizes, comma-separated")
    parser.add_argument("--concurrency", type=int, default=1, help="client connections")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    rng = random.Random(7)
    rows = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="predcache-bench-") as tmp:
        predcache = Predcache(stack, Path(tmp), stack.enter_context(model_server()))
        for size in sizes:
            body = batch_body(size, rng)
            for _ in range(4):  # stored, then a HIT in each gunicorn worker (each has its own hints)
                status, cache, _ = predcache.predict(body)
            assert (status, cache) == (200, "HIT"), (status, cache)
            rps, latencies = load(
                predcache.server.port,
                "/v1/models/echo:predict",
                body,
                predcache.headers,
                seconds=args.seconds,
                concurrency=args.concurrency,
            )
            rows.append((size, rps, latencies))
    report(rows, args)


def report(rows: list[tuple[int, float, list[float]]], args: Any) -> None:
    command = " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    plot = plots.lines(
        "batch",
        title="Cached batches: cost per instance (one connection, every instance a hit)",
        xs=[size for size, _, _ in rows],
        series={"mean latency per instance": [statistics.mean(lat) * 1000 / size for size, _, lat in rows]},
        xlabel="instances per request",
        ylabel="microseconds per instance",
        log=True,
    )
    lines = [
        "# Cached batches",
        "",
        f"`{command}` on {machine.description()}, {time.strftime('%Y-%m-%d')}. "
        "gunicorn gthread, 2 workers x 4 threads "
        "(predcache_site/gunicorn_conf.py), "
        f"{args.concurrency} client connection(s), {args.seconds:g} s per size; every request a full HIT "
        "(one Redis MGET). The Python load client shares the cores.",
        "",
        *table(
            ["instances", "req/s", "p50 ms", "p99 ms", "mean ms", "per instance us (mean)", "instances/s"],
            [
                [
                    f"{size:,}",
                    f"{rps:,.0f}",
                    f"{percentile(latencies, 0.5):.2f}",
                    f"{percentile(latencies, 0.99):.2f}",
                    f"{statistics.mean(latencies):.2f}",
                    f"{statistics.mean(latencies) * 1000 / size:,.1f}",
                    f"{rps * size:,.0f}",
                ]
                for size, rps, latencies in rows
            ],
        ),
        "",
        plots.link(plot),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (REPO / "bench" / "results" / "batch.md").write_text(text)


if __name__ == "__main__":
    main()
