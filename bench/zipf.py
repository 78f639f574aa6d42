"""The Zipf workload: predcache against no cache, a whole-request cache and an ideal cache.

Requests of 1-8 instances drawn Zipf-distributed over 3,000 items, sent one after another to a
model that takes 30 ms (tests/support/model_server.py, its ``delay`` control). Conditions:

- no cache: every request calls the model;
- whole-request cache: one key per request body (what a response cache in front of the model
  does), here a Redis GET, and on a miss the model call and a SET, made by this script;
- predcache: the same requests through gunicorn;
- ideal: computed, not run: each request with an instance never seen before pays one model
  call plus a hit, every other request a hit (predcache's measured mean HIT latency, and the
  measured mean latency of calling the model directly).

For each condition the model server counts the instances it computed (backend instances); the
instance hit ratio is the share of requested instances the model did not compute for that
request, 1 - backend instances / requested instances (the ideal computes each distinct instance
once). Under predcache the model should compute each distinct instance exactly once. Prints a
table and writes bench/results/zipf.md, with a plot of the means, bench/results/zipf.png.

    .venv/bin/python bench/zipf.py [--requests 1000] [--exponent 1.0] [--model-ms 30]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import random
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import redis  # noqa: E402
import urllib3  # noqa: E402

from bench import machine, plots  # noqa: E402
from bench.batch import Predcache  # noqa: E402
from bench.hit_path import table  # noqa: E402
from tests.support.processes import model_server  # noqa: E402

ITEMS = 3000


def workload(requests: int, exponent: float, seed: int) -> list[list[dict[str, int]]]:
    rng = random.Random(seed)
    weights = [1 / rank**exponent for rank in range(1, ITEMS + 1)]
    return [
        [{"item": item} for item in rng.choices(range(ITEMS), weights=weights, k=rng.randint(1, 8))]
        for _ in range(requests)
    ]


class Timed:
    """Sequential POSTs on one keep-alive connection, timed."""

    def __init__(self, port: int, path: str, headers: dict[str, str]) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.path, self.headers = path, headers

    def post(self, body: bytes) -> tuple[float, str | None, bytes]:
        start = time.perf_counter()
        self.connection.request("POST", self.path, body=body, headers=self.headers)
        response = self.connection.getresponse()
        content = response.read()
        elapsed = (time.perf_counter() - start) * 1000
        assert response.status == 200, (response.status, content[:300])
        return elapsed, response.getheader("X-Cache"), content


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--exponent", type=float, default=1.0, help="Zipf exponent s: P(rank k) ~ 1/k^s")
    parser.add_argument("--model-ms", type=float, default=30.0, help="the model's delay per call")
    parser.add_argument("--seed", type=int, default=10)
    args = parser.parse_args()
    batches = workload(args.requests, args.exponent, args.seed)
    bodies = [orjson.dumps({"instances": batch}) for batch in batches]
    seen: set[int] = set()
    new_requests = 0
    for batch in batches:
        items = {instance["item"] for instance in batch}
        new_requests += bool(items - seen)
        seen |= items
    distinct = len(seen)

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="predcache-bench-") as tmp:
        model_url = stack.enter_context(model_server())
        http_pool = urllib3.PoolManager()
        http_pool.request("POST", f"{model_url}/control", json={"delay": args.model_ms / 1000})
        predcache = Predcache(stack, Path(tmp), model_url)
        model_port = int(model_url.rsplit(":", 1)[1])
        plain = {"Content-Type": "application/json"}

        def backend_instances() -> tuple[int, int]:
            """(instances computed, calls) the model server received since the last call of this."""
            calls = http_pool.request("GET", f"{model_url}/calls").json()["calls"]
            http_pool.request("POST", f"{model_url}/reset-calls", json={})
            return sum(len(call["instances"]) for call in calls), len(calls)

        backend_instances()  # predcache's start-up made none, but start from zero whatever happened
        direct = Timed(model_port, "/predict", plain)
        no_cache = [direct.post(body)[0] for body in bodies]
        no_cache_backend = backend_instances()

        store = redis.Redis.from_url(predcache.redis.url)
        whole: list[float] = []
        for body in bodies:
            start = time.perf_counter()
            key = b"bench:whole:" + hashlib.blake2b(body, digest_size=16).digest()
            if store.get(key) is None:
                store.set(key, direct.post(body)[2], ex=3600)
            whole.append((time.perf_counter() - start) * 1000)
        whole_backend = backend_instances()

        through = Timed(predcache.server.port, "/v1/models/echo:predict", predcache.headers)
        cached = [through.post(body) for body in bodies]
        computed, model_calls = predcache_backend = backend_instances()

    latencies = [elapsed for elapsed, _, _ in cached]
    hits = [elapsed for elapsed, status, _ in cached if status == "HIT"]
    hit_ms, model_ms = statistics.mean(hits), statistics.mean(no_cache)
    ideal_ms = hit_ms + new_requests / len(bodies) * model_ms
    report(
        args,
        distinct=distinct,
        new_requests=new_requests,
        requested=sum(len(batch) for batch in batches),
        computed=computed,
        model_calls=model_calls,
        rows=[
            ("no cache", statistics.mean(no_cache), sorted(no_cache), no_cache_backend),
            ("whole-request cache", statistics.mean(whole), sorted(whole), whole_backend),
            ("predcache", statistics.mean(latencies), sorted(latencies), predcache_backend),
            ("ideal (computed)", ideal_ms, None, (distinct, None)),
        ],
        hit_ms=hit_ms,
        model_ms=model_ms,
        ideal_ms=ideal_ms,
    )


def report(
    args: Any, *, distinct, new_requests, requested, computed, model_calls, rows, hit_ms, model_ms, ideal_ms
) -> None:
    command = " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    predcache_ms = rows[2][1]
    plot = plots.bars(
        "zipf",
        title=f"Zipf workload: mean latency per request (model {args.model_ms:g} ms)",
        labels=[name for name, *_ in rows],
        values=[mean for _, mean, _, _ in rows],
        ylabel="mean ms",
        value_format="{:.2f}",
    )

    def backend(instances: int, calls: int | None) -> str:
        return f"{instances:,}" + ("" if calls is None else f" in {calls:,} calls")

    def p(latencies, fraction):
        return (
            "-"
            if latencies is None
            else f"{latencies[min(len(latencies) - 1, int(fraction * len(latencies)))]:.2f}"
        )

    lines = [
        "# Zipf workload",
        "",
        f"`{command}` on {machine.description()}, {time.strftime('%Y-%m-%d')}. "
        f"{args.requests:,} requests of 1-8 instances drawn Zipf "
        f"(s={args.exponent:g}) "
        f"over {ITEMS:,} items, sent one after another; the model answers in {args.model_ms:g} ms. "
        "predcache: gunicorn gthread, 2 workers x 4 threads.",
        "",
        *table(
            [
                "condition",
                "mean ms",
                "p50 ms",
                "p99 ms",
                "instance hit ratio",
                "backend instances",
                "mean vs ideal",
            ],
            [
                [
                    name,
                    f"{mean:.2f}",
                    p(lat, 0.5),
                    p(lat, 0.99),
                    f"{1 - instances / requested:.1%}",
                    backend(instances, calls),
                    f"{mean / ideal_ms:.3f}",
                ]
                for name, mean, lat, (instances, calls) in rows
            ],
        ),
        "",
        f"- instances requested: {requested:,}; instance hit ratio = 1 - backend instances / requested",
        f"- distinct instances: {distinct:,}; instances the model computed under predcache: {computed:,} "
        f"in {model_calls:,} calls ({'each' if computed == distinct else 'NOT each'} exactly once)",
        f"- requests with an instance never seen before: {new_requests:,} of {args.requests:,}",
        f"- ideal = mean HIT latency {hit_ms:.2f} ms + {new_requests / args.requests:.3f} x mean model call "
        f"{model_ms:.2f} ms = {ideal_ms:.2f} ms; predcache / ideal = {predcache_ms / ideal_ms:.3f} "
        f"({'within' if predcache_ms / ideal_ms <= 1.15 else 'NOT within'} 1.15)",
        "",
        plots.link(plot),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (REPO / "bench" / "results" / "zipf.md").write_text(text)


if __name__ == "__main__":
    main()
