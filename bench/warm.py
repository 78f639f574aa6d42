"""Benchmark warming: instances per second a Celery worker warms, by batch size and warm rate.

Everything runs on this machine in processes this script starts: its own Redis (also the broker),
an SQLite file, the HTTP model server answering every call after a fixed latency, and one prefork
worker. Each row warms a set of new instances through ``predcache.warm_set`` (as a schedule
does) and times the run as its WarmRun row records it (the worker's start to its end); the last
rows warm a set that is cached already (lookups only). Prints a table and writes
bench/results/warm.md.

    .venv/bin/python bench/warm.py [--latency-ms 20] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import urllib3  # noqa: E402

from bench import machine  # noqa: E402
from predcache_site.local_redis import RedisServer, wait_until  # noqa: E402
from tests.support.processes import model_server  # noqa: E402

# (batch size, warm rate in instances/s or None for unthrottled)
CONFIGURATIONS = [(1, None), (10, None), (100, None), (500, None), (100, 200), (100, 1000), (10, 100)]


def instances_for(batch: int, rate: int | None, seconds: float, latency: float) -> int:
    """Enough instances for a run of about ``seconds``: by the rate, or by calls of ``latency``."""
    per_second = rate if rate is not None else batch / latency
    return max(batch * 4, min(5000, int(per_second * seconds) // batch * batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the model server's time per call")
    parser.add_argument("--seconds", type=float, default=3.0, help="about how long each warm should take")
    args = parser.parse_args()
    latency = args.latency_ms / 1000

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="predcache-bench-warm-") as tmp:
        work = Path(tmp)
        redis_server = RedisServer(work / "redis").start()
        stack.callback(redis_server.stop)
        model_url = stack.enter_context(model_server())
        urllib3.request("POST", f"{model_url}/control", json={"delay": latency})
        os.environ.update(
            {
                "DATABASE_URL": f"sqlite:///{work / 'bench.sqlite3'}",
                "REDIS_URL": redis_server.url,
                "DJANGO_SECRET_KEY": "bench",
                "DJANGO_SETTINGS_MODULE": "predcache_site.settings",
                "PREDCACHE_CELERY_QUEUE": "bench-warm",
                "PREDCACHE_STATS_FLUSH_SECONDS": "0",
                "LOG_LEVEL": "WARNING",
            }
        )
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from caching.models import WarmRun
        from caching.services import CLEAR, model_upsert
        from caching.services.warm_sets import warm_set_upsert
        from caching.services.warming import warm_set_enqueue
        from tests.support.celery_worker import celery_worker

        worker = stack.enter_context(
            celery_worker(work / "worker", environment={"LOG_LEVEL": "WARNING"}, concurrency=1)
        )

        def warm(name: str, batch: int, rate: int | None, count: int) -> tuple[float, int, float | None]:
            """Warm ``count`` instances of model ``name``: (seconds the run took, instances computed,
            the rate the model server saw: instances before its last call / first to last call)."""
            urllib3.request("POST", f"{model_url}/reset-calls", json={})
            model, _ = model_upsert(
                name=name,
                backend="http",
                target=f"{model_url}/predict",
                warm_batch_size=batch,
                warm_rate=CLEAR if rate is None else rate,  # None would keep the default rate
                ttl_seconds=3600,
            )
            warm_set, _ = warm_set_upsert(
                model=model, name="bench", instances=[{"id": i, "x": i * 0.5} for i in range(count)]
            )
            run = warm_set_enqueue(warm_set=warm_set, requested_by="bench")
            try:
                wait_until(
                    lambda: WarmRun.objects.get(pk=run.pk).status in ("finished", "failed"),
                    timeout=float(os.environ.get("BENCH_TIMEOUT", "600")),
                    what=f"the warm of {name}",
                )
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}; the worker's log ends:\n{worker.log_text()[-3000:]}") from None
            run.refresh_from_db()
            if run.status != "finished" or run.errors:
                raise RuntimeError(f"warm of {name} {run.status}: {run.message}")
            calls = urllib3.request("GET", f"{model_url}/calls").json()
            times, sizes = calls["times"], [len(call["instances"]) for call in calls["calls"]]
            seen = sum(sizes[:-1]) / (times[-1] - times[0]) if len(times) > 1 else None
            return (run.finished_at - run.started_at).total_seconds(), run.computed, seen

        rows = []
        for batch, rate in CONFIGURATIONS:
            count = instances_for(batch, rate, args.seconds, latency)
            name = f"b{batch}-r{rate or 'off'}"
            seconds, computed, seen = warm(name, batch, rate, count)
            rows.append((batch, rate, count, computed, seconds, -(-count // batch), seen))
            print(f"  {name}: {count} instances in {seconds:.2f} s", file=sys.stderr)
        cached_rows = []
        for batch, rate in ((100, None), (100, 200)):
            name = f"b{batch}-r{rate or 'off'}"
            count = instances_for(batch, rate, args.seconds, latency)
            started = time.perf_counter()
            seconds, computed, _ = warm(name, batch, rate, count)  # the same set again: all cached
            cached_rows.append((batch, rate, count, computed, seconds, time.perf_counter() - started))

    report = render(rows, cached_rows, args.latency_ms)
    print(report)
    out = REPO / "bench" / "results" / "warm.md"
    out.write_text(report)
    print(f"wrote {out.relative_to(REPO)}", file=sys.stderr)


def render(rows: list[tuple], cached_rows: list[tuple], latency_ms: float) -> str:
    """The results as Markdown."""
    command = " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    lines = [
        "# Warm throughput",
        "",
        f"`{command}` on {machine.description()}, {date.today()}. "
        "One prefork worker (concurrency 1) runs `predcache.warm_set`; "
        f"the HTTP model server answers every call after {latency_ms:g} ms; Redis (cache and broker) "
        "and SQLite on the same machine. Time: the run's start to its end as its WarmRun row records "
        "them (the first batch goes at once, so a short throttled run beats its rate). At the model "
        "server: the instances sent before its last call over the time from its first call to its "
        "last, what the warm rate bounds (the pace books each call's instances from when it was sent).",
        "",
        "## New instances (every one computed)",
        "",
        "| batch size | warm rate (/s) | instances | backend calls | seconds | instances/s "
        "| at the model server (/s) | of the rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for batch, rate, count, computed, seconds, calls, seen in rows:
        assert computed == count
        share = "-" if rate is None or seen is None else f"{seen / rate:.0%}"
        lines.append(
            f"| {batch} | {rate or 'unthrottled'} | {count:,} | {calls:,} | {seconds:.2f} | "
            f"{count / seconds:,.0f} | {'-' if seen is None else f'{seen:,.0f}'} | {share} |"
        )
    lines += [
        "",
        "## The same sets again (all cached: lookups only, no backend call, no pacing)",
        "",
        "| batch size | warm rate (/s) | instances | computed | seconds | instances/s |",
        "|---|---|---|---|---|---|",
    ]
    for batch, rate, count, computed, seconds, _ in cached_rows:
        lines.append(
            f"| {batch} | {rate or 'unthrottled'} | {count:,} | {computed} | {seconds:.3f} | "
            f"{count / seconds:,.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
