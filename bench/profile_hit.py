"""What a cached hit costs in process, next to the floor: the WSGI app called directly, no HTTP.

Starts its own Redis and SQLite file, registers the demo model and caches one instance, then
calls the app in turns (a hit, then the floor: the bench's one-GET view, served as predict is)
and prints, for each, microseconds per call of wall time and of this thread's CPU (Redis's own
time is not in it). With --profile, the top of a cProfile of the hits. With --cluster, all of it
on a Redis Cluster of three primaries (REDIS_CLUSTER=true): the hit's MGET, and the floor's GET,
then go through redis-py's cluster client.

    .venv/bin/python bench/profile_hit.py [--requests 5000] [--rounds 3] [--profile] [--cluster] \
        [--limited-key]

--limited-key adds a third turn: a hit with a key limited to the model and to 100,000 requests a
minute (its scope and rate checked on every request, its tokens leased 5,000 at a time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from predcache_site.local_redis import RedisServer  # noqa: E402

BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="calls of each, per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds")
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile of the hits")
    parser.add_argument("--cluster", action="store_true", help="on a Redis Cluster of three primaries")
    parser.add_argument(
        "--limited-key", action="store_true", help="also time hits with a scoped, rate-limited key"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="predcache-profile-") as tmp:
        work = Path(tmp)
        if args.cluster:
            from tests.support.redis_cluster import RedisCluster

            # The broker is never used here, and cannot be the cluster.
            os.environ.update(REDIS_CLUSTER="true", CELERY_BROKER_URL="memory://")
            redis_server: RedisServer | RedisCluster = RedisCluster(work / "cluster", replicas=0).start()
        else:
            redis_server = RedisServer(work / "redis").start()
        try:
            run(work, redis_server.url, args)
        finally:
            redis_server.stop()


def run(work: Path, redis_url: str, args: argparse.Namespace) -> None:
    os.environ.update(
        DATABASE_URL=f"sqlite:///{work / 'profile.sqlite3'}",
        REDIS_URL=redis_url,
        DJANGO_SECRET_KEY="profile",
        PREDCACHE_MODEL_DIR=str(work / "models"),
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="predcache_site.settings",
    )
    subprocess.run(
        [sys.executable, "scripts/train_demo_model.py", str(work / "models" / "iris.joblib")],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    import django
    from django.conf import settings

    # predcache's routes and the floor's in one URLconf, so both run in this process.
    urlconf = types.ModuleType("profile_urls")
    sys.modules[urlconf.__name__] = urlconf
    settings.ROOT_URLCONF = urlconf.__name__
    django.setup()
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application

    from bench.baseline_urls import BASELINE_KEY
    from bench.baseline_urls import urlpatterns as floor_patterns
    from caching.core.ratelimit import Rate
    from caching.runtime import get_runtime
    from caching.services import api_key_create, model_upsert
    from predcache_site.urls import urlpatterns

    urlconf.urlpatterns = [*floor_patterns, *urlpatterns]  # type: ignore[attr-defined]
    call_command("migrate", verbosity=0)
    model_upsert(name="iris", backend="local", target="iris.joblib")
    key = api_key_create(label="profile")
    get_runtime().client.set(BASELINE_KEY, b"[0]")
    app = get_wsgi_application()
    targets = {
        "HIT": ("/v1/models/iris:predict", {"HTTP_AUTHORIZATION": f"Api-Key {key}"}),
        "floor": ("/baseline", {}),
    }
    if args.limited_key:
        limited = api_key_create(label="limited", model_names=["iris"], rate=Rate(100_000, 60))
        targets["HIT, limited key"] = (
            "/v1/models/iris:predict",
            {"HTTP_AUTHORIZATION": f"Api-Key {limited}"},
        )

    def call(path: str, headers: dict[str, str]) -> tuple[str, list[tuple[str, str]]]:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "HTTP_HOST": "127.0.0.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(BODY)),
            "wsgi.input": io.BytesIO(BODY),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            **headers,
        }
        answer: list = []
        chunks = app(environ, lambda status, response_headers: answer.extend((status, response_headers)))
        b"".join(chunks)
        return answer[0], answer[1]

    for _ in range(2):  # the first computes (a MISS), the second must be a HIT
        status, response_headers = call(*targets["HIT"])
    assert status.startswith("200") and ("X-Cache", "HIT") in response_headers, (status, response_headers)
    assert call(*targets["floor"])[0].startswith("200")
    for target in targets.values():
        for _ in range(300):
            call(*target)

    # One HIT, one floor, in turns, each timed on this thread's CPU clock: both see the machine as
    # it is at that moment (on a shared machine its speed drifts within seconds).
    spent = dict.fromkeys(targets, 0)
    wall_spent = dict.fromkeys(targets, 0)
    cpu, clock = time.thread_time_ns, time.perf_counter_ns
    for _ in range(args.requests * args.rounds):
        for label, target in targets.items():
            started, cpu_started = clock(), cpu()
            call(*target)
            spent[label] += cpu() - cpu_started
            wall_spent[label] += clock() - started
    calls = args.requests * args.rounds * 1000
    width = max(map(len, targets))
    for label in targets:
        wall, used = wall_spent[label] / calls, spent[label] / calls
        print(f"{label:{width}s}  {wall:6,.0f} us per call, {used:6,.0f} us of CPU")
    for label in targets:
        if label != "floor":
            wall_ratio, cpu_ratio = wall_spent["floor"] / wall_spent[label], spent["floor"] / spent[label]
            print(f"floor/{label}: wall {wall_ratio:.2f}, CPU {cpu_ratio:.2f}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.requests):
            call(*targets["HIT"])
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(os.environ.get("PROFILE_FILTER", ""), 60)
        stats.sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
