"""Benchmark the in-process tier (L1): hit throughput with and without it against the floor, the
Redis commands its hits make, and how soon a purge is seen.

One predcache gunicorn serves the iris model twice, as ``iris`` (no tier) and ``iris-l1``
(``--l1 on``); the floor is the bare Django view doing one Redis GET (bench/baseline_urls.py).
The three are loaded in turns (floor, HIT, HIT with L1, floor, ...) so drift on a shared machine
spreads over all of them. Then:

- 1,000 L1 hits, with Redis's ``INFO commandstats`` read before and after;
- purge to invisible: a model whose every computation answers differently (the model server's
  call count) is purged through the management API again and again; right after each purge
  returns, requests on fresh connections ask for its prediction, and any answer that is the
  purged one is counted. Beside it, a tracking connection of this process (as each worker has)
  times when Redis's push for the purge is readable, from the moment the purge returned.

Writes bench/results/l1.md.

    .venv/bin/python bench/l1.py [--turns 10] [--turn-seconds 1.5] [--purges 200]
"""

from __future__ import annotations

import argparse
import http.client
import select
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import redis  # noqa: E402

from bench import machine  # noqa: E402
from bench.batch import Predcache  # noqa: E402
from bench.hit_path import IRIS_INSTANCE, Server, call, hit_vs_floor, p50_p99, percentile, table  # noqa: E402
from predcache_site.local_redis import RedisServer  # noqa: E402
from tests.support.processes import model_server  # noqa: E402

LOOKUP_COMMANDS = ("mget", "get", "evalsha")  # a lookup; the flush's hot-set update is an EVAL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10, help="turns of each target per connection count")
    parser.add_argument("--turn-seconds", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--purges", type=int, default=200, help="purges timed")
    args = parser.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="predcache-bench-") as tmp:
        work = Path(tmp)
        model_url = stack.enter_context(model_server())
        predcache = Predcache(stack, work, model_url, PREDCACHE_MODEL_DIR=str(work / "models"))
        manage = predcache.manage
        subprocess.run(
            [sys.executable, "scripts/train_demo_model.py", str(work / "models" / "iris.joblib")],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        for name, l1 in (("iris", "off"), ("iris-l1", "on")):
            manage(
                "predcache",
                "models",
                "upsert",
                name,
                "--backend",
                "local",
                "--target",
                "iris.joblib",
                "--l1",
                l1,
            )
        counter = f"{model_url}/predict"
        manage(
            "predcache", "models", "upsert", "counter", "--backend", "http", "--target", counter, "--l1", "on"
        )
        admin_key = manage("predcache", "keys", "create", "bench-admin", "--admin").strip().splitlines()[-1]
        headers = predcache.headers
        admin_headers = {"Content-Type": "application/json", "Authorization": f"Api-Key {admin_key}"}
        baseline = Server(predcache.env, "bench.baseline_settings", "/healthz")
        stack.callback(baseline.stop)
        client = redis.Redis.from_url(predcache.redis.url)
        client.set("bench:baseline", orjson.dumps({"predictions": [0]}))
        port = predcache.server.port

        body = orjson.dumps({"instances": [IRIS_INSTANCE]})
        json_headers = {"Content-Type": "application/json"}
        targets = [
            ("floor", baseline.port, "/baseline", json_headers),
            ("HIT", port, "/v1/models/iris:predict", headers),
            ("HIT with L1", port, "/v1/models/iris-l1:predict", headers),
        ]
        for _, port, path, target_headers in targets:
            until_l1(port, path, body, target_headers, l1=path.endswith("iris-l1:predict"))
        rows = hit_vs_floor(targets, body, args)
        commands = l1_hit_commands(client, port, body, headers)
        purges = purge_to_invisible(predcache.redis, port, headers, admin_headers, args.purges)
    report(rows, commands, purges, args)


def until_l1(port: int, path: str, body: bytes, headers: dict[str, str], *, l1: bool) -> None:
    """Repeat the request until it is a HIT (from the tier, for an l1 model) in every worker: 200 tries."""
    answered = 0
    for _ in range(200):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        connection.close()
        assert response.status == 200, (path, response.status, answer[:300])
        wanted = "predcache; hit; detail=l1" if l1 else None
        answered += wanted is None or response.getheader("Cache-Status") == wanted
        if answered >= 20:
            return
    raise RuntimeError(f"{path} never answered from the tier")


def command_calls(client: redis.Redis) -> dict[str, int]:
    return {
        name.removeprefix("cmdstat_"): stats["calls"] for name, stats in client.info("commandstats").items()
    }


def l1_hit_commands(client: redis.Redis, port: int, body: bytes, headers: dict[str, str]) -> dict[str, int]:
    """The commands Redis ran while 1,000 L1 hits were answered (one keep-alive connection)."""
    before = command_calls(client)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(1000):
        connection.request("POST", "/v1/models/iris-l1:predict", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.getheader("Cache-Status") == "predcache; hit; detail=l1", response.getheader(
            "Cache-Status"
        )
    connection.close()
    after = command_calls(client)
    return {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}


def purge_to_invisible(
    redis_server: RedisServer, port: int, headers: dict[str, str], admin_headers: dict[str, str], purges: int
) -> dict[str, object]:
    body = orjson.dumps({"instances": [{"calls": "bench"}]})
    path = "/v1/models/counter:predict"
    until_l1(port, path, body, headers, l1=True)
    watcher = redis.Connection(port=redis_server.port, protocol=3)
    watcher.connect()
    pushes: list[object] = []
    watcher._parser.set_invalidation_push_handler(pushes.append)
    watcher.send_command("CLIENT", "TRACKING", "ON", "BCAST")  # every key: this process sees each push
    watcher.read_response()
    poller = select.poll()
    poller.register(watcher._sock, select.POLLIN)

    stale = asked = 0
    ready_at_return = 0
    waits: list[float] = []
    first_fresh_ms: list[float] = []
    for _ in range(purges):
        old = prediction(port, path, body, headers)
        while watcher.can_read(timeout=0):  # pushes of earlier saves
            watcher.read_response(push_request=True)
        status, _, answer = call(port, "POST", "/v1/admin/models/counter:purge", b"{}", admin_headers)
        returned = time.perf_counter()
        assert status == 200, answer[:200]
        if poller.poll(0):
            ready_at_return += 1
        else:
            poller.poll(1000)
            waits.append((time.perf_counter() - returned) * 1000)
        for attempt in range(4):  # fresh connections: any worker
            value = prediction(port, path, body, headers)
            asked += 1
            stale += value == old
            if attempt == 0:
                first_fresh_ms.append((time.perf_counter() - returned) * 1000)
    watcher.disconnect()
    return {
        "purges": purges,
        "asked": asked,
        "stale": stale,
        "ready_at_return": ready_at_return,
        "waits": sorted(waits),
        "first_answer_ms": sorted(first_fresh_ms),
    }


def prediction(port: int, path: str, body: bytes, headers: dict[str, str]) -> object:
    status, _, answer = call(port, "POST", path, body, headers)
    assert status == 200, answer[:200]
    return orjson.loads(answer)["predictions"][0]


def report(rows, commands: dict[str, int], purges: dict[str, object], args) -> None:
    command = " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    lines = []
    for concurrency, rps, latencies in rows:
        floor = rps["floor"]
        for label, values in rps.items():
            ratios = sorted(mine / base for mine, base in zip(values, floor, strict=True))
            quarter = len(ratios) // 4
            lines.append(
                [
                    str(concurrency),
                    label,
                    f"{statistics.median(values):,.0f}",
                    *p50_p99(latencies[label], 2),
                    "" if label == "floor" else f"**{statistics.median(ratios):.2f}**",
                    "" if label == "floor" else f"{ratios[quarter]:.2f} to {ratios[-1 - quarter]:.2f}",
                ]
            )
    throughput = table(
        ["connections", "", "req/s (median turn)", "p50 ms", "p99 ms", "this/floor", "middle half"], lines
    )
    lookups = sum(commands.get(name, 0) for name in LOOKUP_COMMANDS)
    ran = ", ".join(f"{name} {count}" for name, count in sorted(commands.items()))
    waits = purges["waits"]
    assert isinstance(waits, list)
    first = purges["first_answer_ms"]
    assert isinstance(first, list)
    text = "\n".join(
        [
            "# In-process tier (L1) benchmark",
            "",
            f"`{command}` on {machine.description()}, {time.strftime('%Y-%m-%d')}. One predcache gunicorn "
            "(gthread, 2 workers x 4 threads) serving iris without and with `--l1 on`, and the floor's "
            "gunicorn (a bare Django view doing one Redis GET); the Python load client shares the cores.",
            "",
            "## Hit throughput against the floor",
            "",
            f"Floor, HIT and HIT with L1 loaded in turns, {args.turns} turns of {args.turn_seconds:g} s per "
            "connection count; this/floor is the median over turns of this row's req/s over the floor's in "
            "the same turn.",
            "",
            *throughput,
            "",
            "## Redis commands of 1,000 L1 hits",
            "",
            f"`INFO commandstats` before and after: **{lookups}** lookup commands (MGET, GET, EVALSHA); all "
            f"commands that ran meanwhile: {ran or 'none'} (the workers' stats flushes with the hot set's "
            "EVAL, the tier's heartbeats and the INFO itself).",
            "",
            "## Purge to invisible",
            "",
            f"{purges['purges']} purges through the management API of a model with `--l1 on` whose every "
            "computation answers differently; after each returned, 4 requests on fresh connections "
            f"(either worker): **{purges['stale']} of {purges['asked']}** answered the purged prediction.",
            "",
            "A tracking connection in the bench process found Redis's push already readable when the "
            f"purge's HTTP answer returned in **{purges['ready_at_return']} of {purges['purges']}** purges"
            + (
                f"; otherwise it came {percentile(waits, 0.5):.3f} ms (p50), {max(waits):.3f} ms (max) later."
                if waits
                else "."
            )
            + " A worker drains its own connection before answering from the tier, so the bound is when the "
            "push reaches the worker's socket, not when a thread gets to it.",
            "",
            f"First answer after the purge returned: p50 {percentile(first, 0.5):.2f} ms, p99 "
            f"{percentile(first, 0.99):.2f} ms (a request that recomputes: a MISS).",
        ]
    )
    print(text)
    (REPO / "bench" / "results" / "l1.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
