"""Benchmark the hit path through gunicorn against the floor: a bare Django view doing one Redis GET.

The floor parses the same body and does one Redis GET, served as the predict routes are (the
lean dispatch, caching/api/lean.py), so the ratio weighs only what predcache adds to a hit: the
API key, the checks of the body, the read-through and the headers. The same view down the whole
middleware stack is shown beside it. Hit and floors are loaded in turns (HIT, floor, full-stack
floor, HIT, ...) so drift on a shared machine spreads over all of them.

Also compares the hit path with refresh-ahead's hot-key sampling off, at its default (1 in 10
fresh hits) and on every hit (three more predcache gunicorns, loaded in turns, same run), and
measures a MISS against the demo model (iris, local) and the HTTP model server, next to calling
each model directly. Everything runs on this machine in processes this script starts (its own
Redis, SQLite file, model server, two gunicorns, then three for the A/B). Prints a table and writes
bench/results/hit_path.md with a plot of the first table, bench/results/hit_path.png (not with
--hit-vs-floor-only, which measures the first table alone; --ab-rounds 0 leaves out the A/B).
With --cluster (and --hit-vs-floor-only) the first table is measured on a Redis Cluster of three
primaries (REDIS_CLUSTER=true): the hit's MGET and the floor's GET go through redis-py's cluster
client.

    .venv/bin/python bench/hit_path.py [--seconds 5] [--concurrency 8] [--ab-rounds 3]
        [--turns 12] [--turn-seconds 1.5] [--hit-vs-floor-only [--cluster]]
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from bench import machine, plots  # noqa: E402
from predcache_site.local_redis import RedisServer, free_port, wait_until  # noqa: E402
from tests.support.processes import fake_vertex_server, model_server  # noqa: E402

IRIS_INSTANCE = [5.1, 3.5, 1.4, 0.2]
VERTEX_ENDPOINT = "projects/bench/locations/us-central1/endpoints/1"
# Hot-key sampling compared on the hit path: (label, PREDCACHE_HOT_SAMPLE_RATE).
SAMPLING = (("off", "0"), ("1 in 10 (default)", "10"), ("every hit", "1"))


class Server:
    """A gunicorn process with the shared config, on its own port."""

    def __init__(self, env: dict[str, str], settings_module: str, probe_path: str) -> None:
        self.port = free_port()
        env = {**env, "DJANGO_SETTINGS_MODULE": settings_module, "GUNICORN_BIND": f"127.0.0.1:{self.port}"}
        # WhiteNoise's warning that collectstatic has not run, once per worker: no static file is served.
        env.setdefault("PYTHONWARNINGS", "ignore:No directory at:UserWarning")
        command = [sys.executable, "-m", "gunicorn", "-c", "predcache_site/gunicorn_conf.py"]
        command += ["--log-level", "warning"]  # the tables, not each worker's boot, on the terminal
        self.process = subprocess.Popen([*command, "predcache_site.wsgi"], cwd=REPO, env=env)
        self.probe_path = probe_path
        try:
            wait_until(self._up, timeout=30, what=f"gunicorn ({settings_module})")
        except RuntimeError:
            self.stop()
            raise

    def _up(self) -> bool:
        try:
            return call(self.port, "GET", self.probe_path)[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


def call(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("X-Cache"), response.read()
    finally:
        connection.close()


def load(
    port: int, path: str, body: bytes | None, headers: dict[str, str], *, seconds: float, concurrency: int
):
    """Closed-loop load over keep-alive connections; returns (requests/s, latencies in ms)."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    failures = [0] * concurrency
    deadline = time.perf_counter() + seconds
    method = "POST" if body is not None else "GET"

    def worker(slot: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while (start := time.perf_counter()) < deadline:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            latencies[slot].append((time.perf_counter() - start) * 1000)
            if response.status != 200:
                failures[slot] += 1
        connection.close()

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    merged = sorted(latency for per_thread in latencies for latency in per_thread)
    if sum(failures):
        raise RuntimeError(f"{sum(failures)} requests failed during the load run")
    return len(merged) / elapsed, merged


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def timed(function, repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1000)
    return sorted(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each load run")
    parser.add_argument("--concurrency", type=int, default=8, help="client connections in the load runs")
    parser.add_argument("--misses", type=int, default=300, help="sequential MISS requests per model")
    parser.add_argument(
        "--ab-rounds",
        type=int,
        default=3,
        help="turns of each server in the sampling A/B, per connection count (0: no A/B)",
    )
    parser.add_argument(
        "--turns", type=int, default=12, help="turns of the hit and each floor, per connection count"
    )
    parser.add_argument("--turn-seconds", type=float, default=1.5, help="duration of each of those turns")
    parser.add_argument(
        "--hit-vs-floor-only", action="store_true", help="measure the hit against the floor alone"
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="with --hit-vs-floor-only: on a Redis Cluster of three primaries",
    )
    args = parser.parse_args()
    if args.cluster and not args.hit_vs_floor_only:
        parser.error("--cluster measures the hit against the floor alone: add --hit-vs-floor-only")

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="predcache-bench-") as tmp:
        work = Path(tmp)
        cluster_env = {}
        if args.cluster:
            from tests.support.redis_cluster import RedisCluster

            redis_server: RedisServer | RedisCluster = RedisCluster(work / "cluster", replicas=0).start()
            # Nothing is sent to the broker here, and a cluster cannot be one.
            cluster_env = {"REDIS_CLUSTER": "true", "CELERY_BROKER_URL": "memory://"}
        else:
            redis_server = RedisServer(work / "redis").start()
        stack.callback(redis_server.stop)
        model_url = stack.enter_context(model_server())
        vertex_url = stack.enter_context(fake_vertex_server())
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{work / 'bench.sqlite3'}",
            "REDIS_URL": redis_server.url,
            "DJANGO_SECRET_KEY": "bench",
            "PREDCACHE_MODEL_DIR": str(work / "models"),
            "PYTHONPATH": str(REPO),
            "LOG_LEVEL": "WARNING",
            **cluster_env,
        }

        def manage(*command: str) -> str:
            return subprocess.run(
                [sys.executable, "manage.py", *command],
                cwd=REPO,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout

        manage("migrate", "-v0")
        subprocess.run(
            [sys.executable, "scripts/train_demo_model.py", str(work / "models" / "iris.joblib")],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        manage("predcache", "models", "upsert", "iris", "--backend", "local", "--target", "iris.joblib")
        manage(
            "predcache", "models", "upsert", "echo", "--backend", "http", "--target", f"{model_url}/predict"
        )
        manage(
            "predcache",
            "models",
            "upsert",
            "vx",
            "--backend",
            "vertex",
            "--target",
            VERTEX_ENDPOINT,
            "--api-endpoint",
            vertex_url,
            "--options",
            '{"transport": "rest"}',
        )
        key = manage("predcache", "keys", "create", "bench").strip().splitlines()[-1]
        headers = {"Content-Type": "application/json", "Authorization": f"Api-Key {key}"}

        predcache = Server(env, "predcache_site.settings", "/healthz")
        stack.callback(predcache.stop)
        baseline = Server(env, "bench.baseline_settings", "/healthz")
        stack.callback(baseline.stop)
        import redis

        store = (
            redis.RedisCluster.from_url(redis_server.url)
            if args.cluster
            else redis.Redis.from_url(redis_server.url)
        )
        store.set("bench:baseline", orjson.dumps({"predictions": [0]}))

        hit_body = orjson.dumps({"instances": [IRIS_INSTANCE]})
        status, cache, _ = call(predcache.port, "POST", "/v1/models/iris:predict", hit_body, headers)
        status, cache, _ = call(predcache.port, "POST", "/v1/models/iris:predict", hit_body, headers)
        assert (status, cache) == (200, "HIT"), (status, cache)

        json_headers = {"Content-Type": "application/json"}
        targets = [
            ("HIT", predcache.port, "/v1/models/iris:predict", headers),
            ("floor", baseline.port, "/baseline", json_headers),
            ("full-stack floor", baseline.port, "/baseline-full-stack", json_headers),
        ]
        rows = hit_vs_floor(targets, hit_body, args)
        if args.hit_vs_floor_only:
            print("\n".join(hit_vs_floor_table(rows)))
            return

        sampling_rows, sampled = [], {}
        if args.ab_rounds:
            # Started only now, so the table above is measured with two gunicorns, as before.
            with ExitStack() as ab_stack:
                sampling_servers = []
                for label, rate in SAMPLING:
                    # A key prefix each: their counters (and hot sets) stay apart, showing what each sampled.
                    prefix = f"ab{rate}:"
                    server_env = {**env, "PREDCACHE_HOT_SAMPLE_RATE": rate, "PREDCACHE_KEY_PREFIX": prefix}
                    server = Server(server_env, "predcache_site.settings", "/healthz")
                    ab_stack.callback(server.stop)
                    sampling_servers.append((label, server))
                sampling_rows = sampling_ab(sampling_servers, hit_body, headers, args)
                time.sleep(1.5)  # the servers' stats flushers run every second
            sampled = {
                label: sampled_share(redis.Redis.from_url(redis_server.url), f"ab{rate}:")
                for label, rate in SAMPLING
            }

        miss_rows = []
        import joblib
        import numpy

        iris = joblib.load(work / "models" / "iris.joblib")
        rng = random.Random(7)

        def iris_instance() -> list[float]:
            return [round(rng.uniform(4, 8), 6) for _ in range(4)]

        direct = timed(lambda: iris.predict(numpy.asarray([iris_instance()])), args.misses)
        via = miss_latencies(
            predcache.port,
            "/v1/models/iris:predict",
            lambda: orjson.dumps({"instances": [iris_instance()]}),
            headers,
            args.misses,
        )
        miss_rows.append(("iris (local, in process)", direct, via))

        model_port = int(model_url.rsplit(":", 1)[1])
        direct = miss_latencies(
            model_port,
            "/predict",
            lambda: orjson.dumps({"instances": [rng.random()]}),
            {"Content-Type": "application/json"},
            args.misses,
        )
        via = miss_latencies(
            predcache.port,
            "/v1/models/echo:predict",
            lambda: orjson.dumps({"instances": [rng.random()]}),
            headers,
            args.misses,
        )
        miss_rows.append(("echo (HTTP model server)", direct, via))

        from caching.backends.vertex import VertexBackend

        vertex = VertexBackend(VERTEX_ENDPOINT, api_endpoint=vertex_url, transport="rest", timeout_seconds=10)
        vertex.predict([[0.5]], None)  # the client and its connection, as in a warm web process
        direct = timed(lambda: vertex.predict([[rng.random()]], None), args.misses)
        via = miss_latencies(
            predcache.port,
            "/v1/models/vx:predict",
            lambda: orjson.dumps({"instances": [[rng.random()]]}),
            headers,
            args.misses,
        )
        miss_rows.append(("vertex (fake Vertex REST server, aiplatform client)", direct, via))

    report(rows, miss_rows, sampling_rows, sampled, args)


Turns = dict[str, list[float]]  # per target: one value per turn (req/s), or every latency (ms)


def hit_vs_floor(targets, body: bytes, args) -> list[tuple[int, Turns, Turns]]:
    """Each target loaded in many short turns, per connection count: (connections, req/s per turn,
    latencies). Short turns in a row pair each HIT turn with floor turns run within seconds of it,
    so that drift on a shared machine weighs on both sides of a ratio alike."""
    for _, port, path, headers in targets:
        for _ in range(2):
            status, _, _ = call(port, "POST", path, body, headers)
        assert status == 200, (path, status)
    rows = []
    for concurrency in (1, args.concurrency):
        throughput: dict[str, list[float]] = {label: [] for label, *_ in targets}
        latencies: dict[str, list[float]] = {label: [] for label, *_ in targets}
        for _ in range(args.turns):
            for label, port, path, headers in targets:
                rps, lat = load(port, path, body, headers, seconds=args.turn_seconds, concurrency=concurrency)
                throughput[label].append(rps)
                latencies[label] += lat
        rows.append((concurrency, throughput, {label: sorted(lat) for label, lat in latencies.items()}))
    return rows


def hit_vs_floor_table(rows) -> list[str]:
    header = ["connections", "", "req/s (median turn)", "p50 ms", "p99 ms", "HIT/this", "middle half"]
    lines = []
    for concurrency, throughput, latencies in rows:
        hit = throughput["HIT"]
        for label, rps in throughput.items():
            ratios = sorted(h / r for h, r in zip(hit, rps, strict=True))
            quarter = len(ratios) // 4
            lines.append(
                [
                    str(concurrency),
                    label,
                    f"{statistics.median(rps):,.0f}",
                    *p50_p99(latencies[label], 2),
                    "" if label == "HIT" else f"**{statistics.median(ratios):.2f}**",
                    "" if label == "HIT" else f"{ratios[quarter]:.2f} to {ratios[-1 - quarter]:.2f}",
                ]
            )
    return table(header, lines)


def sampling_ab(
    servers, body: bytes, headers: dict[str, str], args
) -> list[tuple[int, str, list[float], list[float]]]:
    """HIT load on each sampling setting in turns (off, default, every hit, off, ...), so that drift
    on a shared machine spreads over all of them; returns (connections, label, req/s per turn, latencies)."""
    for _, server in servers:
        for _ in range(2):  # the first request stores the entry, the second is a HIT
            status, cache, _ = call(server.port, "POST", "/v1/models/iris:predict", body, headers)
        assert (status, cache) == (200, "HIT"), (status, cache)
    rows = []
    for concurrency in (1, args.concurrency):
        throughput: dict[str, list[float]] = {label: [] for label, _ in servers}
        latencies: dict[str, list[float]] = {label: [] for label, _ in servers}
        for _ in range(args.ab_rounds):
            for label, server in servers:
                rps, lat = load(
                    server.port,
                    "/v1/models/iris:predict",
                    body,
                    headers,
                    seconds=args.seconds,
                    concurrency=concurrency,
                )
                throughput[label].append(rps)
                latencies[label] += lat
        rows += [(concurrency, label, throughput[label], sorted(latencies[label])) for label, _ in servers]
    return rows


def miss_latencies(port: int, path: str, make_body, headers: dict[str, str], repeats: int) -> list[float]:
    """Sequential POSTs on one keep-alive connection, a new body each time."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    samples = []
    for _ in range(repeats):
        body = make_body()
        start = time.perf_counter()
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status == 200 and response.getheader("X-Cache") in (None, "MISS"), response.status
    connection.close()
    return sorted(samples)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def p50_p99(latencies: list[float], digits: int) -> list[str]:
    return [f"{percentile(latencies, 0.5):.{digits}f}", f"{percentile(latencies, 0.99):.{digits}f}"]


def sampled_share(client, prefix: str) -> float:
    """The share of hits a server sampled, from its counters in Redis (hot_samples / hits)."""
    hits = samples = 0
    for key in client.scan_iter(match=f"{prefix}*:stats"):
        counts = client.hgetall(key)
        hits += int(counts.get(b"hits", 0))
        samples += int(counts.get(b"hot_samples", 0))
    return samples / hits if hits else 0.0


def report(rows, miss_rows, sampling_rows, sampled, args) -> None:
    command = " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    hit_table = hit_vs_floor_table(rows)
    plot = plots.grouped_bars(
        "hit_path",
        title="A cached single-instance request vs the floor (median turn)",
        groups=[f"{concurrency} connection{'s' if concurrency > 1 else ''}" for concurrency, *_ in rows],
        series={
            label: [statistics.median(throughput[label]) for _, throughput, _ in rows] for label in rows[0][1]
        },
        ylabel="requests/s",
    )
    off = {
        concurrency: statistics.mean(rps) for concurrency, label, rps, _ in sampling_rows if label == "off"
    }  # empty with --ab-rounds 0
    sampling_table = table(
        [
            "connections",
            "sampling",
            "hits sampled",
            "HIT req/s (mean)",
            "per turn",
            "p50 ms",
            "p99 ms",
            "vs off",
        ],
        [
            [
                str(concurrency),
                label,
                f"{sampled[label]:.1%}",
                f"{statistics.mean(rps):,.0f}",
                " / ".join(f"{value:,.0f}" for value in rps),
                *p50_p99(latencies, 2),
                f"{statistics.mean(rps) / off[concurrency]:.3f}",
            ]
            for concurrency, label, rps, latencies in sampling_rows
        ],
    )
    miss_table = table(
        ["model", "direct p50 ms", "direct p99 ms", "MISS p50 ms", "MISS p99 ms", "overhead p50 ms"],
        [
            [
                name,
                *p50_p99(direct, 3),
                *p50_p99(via, 3),
                f"{statistics.median(via) - statistics.median(direct):.3f}",
            ]
            for name, direct, via in miss_rows
        ],
    )
    lines = [
        "# Hit path benchmark",
        "",
        f"`{command}` on {machine.description()}, {time.strftime('%Y-%m-%d')}. Both servers: "
        "gunicorn gthread, 2 workers x 4 threads "
        "(predcache_site/gunicorn_conf.py); the Python load client shares the cores.",
        "",
        "## A cached single-instance request vs the floor: a bare Django view doing one Redis GET",
        "",
        f"HIT, floor and full-stack floor loaded in turns (HIT, floor, full-stack floor, HIT, ...), "
        f"{args.turns} turns of {args.turn_seconds:g} s each per connection count. The floor parses the "
        "same body and does one GET through redis-py's client, behind what the predict routes run "
        "behind (Django's handler, the lean dispatch and the security middleware); the full-stack "
        "floor is the same view down the whole middleware stack (sessions, CSRF, auth, messages, "
        "WhiteNoise). HIT/this: the median over turns of HIT req/s over this row's in the same turn; "
        "middle half: the ratios of the turns between the first and third quartiles.",
        "",
        *hit_table,
        "",
        plots.link(plot),
        "",
        "## Refresh-ahead's hot-key sampling on the hit path (A/B, same run)",
        "",
        *(
            [
                f"Three predcache gunicorns differing only in PREDCACHE_HOT_SAMPLE_RATE, each loaded "
                f"{args.ab_rounds} times for {args.seconds:g} s in turns (off, default, every hit, "
                "off, ...); samples are flushed with the stats every second. A hit stays one Redis MGET "
                "either way.",
                "",
                *sampling_table,
            ]
            if sampling_rows
            else ["Not measured in this run (`--ab-rounds 0`)."]
        ),
        "",
        f"## MISS latency ({args.misses} sequential requests, new instance each) vs calling the model",
        "",
        "Direct: iris `model.predict` in process; echo: POST to the model server on a keep-alive "
        "connection; vertex: the vertex backend's aiplatform REST client calling the fake Vertex "
        "server from the bench process.",
        "",
        *miss_table,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (REPO / "bench" / "results" / "hit_path.md").write_text(text)


if __name__ == "__main__":
    main()
