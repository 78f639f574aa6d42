"""Redis memory per cached prediction: small and large predictions, with and without compression.

Each condition is a model of its own with its compression settings (CachePolicy's
``compress_over_bytes`` and ``compression``; the default compresses with zlib above 4,096 bytes),
pointed at the HTTP model server (tests/support/model_server.py), whose prediction for an
instance ``{"id": i, "return": p}`` is ``p``: a small classifier answer or a large embedding.
The entries are stored by ordinary predict requests through Django's WSGI handler (in this
process, no network), then each entry key is weighed with ``MEMORY USAGE`` (the key, its value and
Redis's bookkeeping for both) and ``STRLEN``; ``INFO memory``'s ``used_memory`` before and after
storing them gives a second figure that also counts the TTL and the hash table's slots.

Overhead per entry: Redis's bytes for the entry beyond the prediction as stored (its JSON, or
its compressed JSON), the target being at most 100 bytes. Prints a table and writes
bench/results/memory.md.

    .venv/bin/python bench/memory.py [--entries 500]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import redis  # noqa: E402

from bench import machine  # noqa: E402
from bench.hit_path import table  # noqa: E402
from predcache_site.local_redis import RedisServer  # noqa: E402
from tests.support.processes import model_server  # noqa: E402

TARGET_OVERHEAD_BYTES = 100
BATCH = 50  # instances per predict request
PREAMBLE_BYTES = 4  # the codec's version byte, flags byte and header length (caching/core/codec.py)


def small_prediction(rng: random.Random) -> Any:
    """A classifier's answer: a label and three class probabilities."""
    scores = [rng.random() for _ in range(3)]
    total = sum(scores)
    return {"label": rng.choice(["setosa", "versicolor", "virginica"]), "scores": [s / total for s in scores]}


def large_prediction(rng: random.Random) -> Any:
    """An embedding: 768 floats of six decimals."""
    return {"embedding": [round(rng.gauss(0, 0.1), 6) for _ in range(768)]}


@dataclass(frozen=True)
class Condition:
    name: str
    prediction: Callable[[random.Random], Any]
    compress_over: int | None  # None: never compress
    compression: str = "zlib"


CONDITIONS = (
    Condition("small, not compressed", small_prediction, None),
    Condition("small, zlib on every entry", small_prediction, 0),
    Condition("large, not compressed", large_prediction, None),
    Condition("large, zlib above 4,096 B (the default)", large_prediction, 4096),
    Condition("large, zstd above 4,096 B", large_prediction, 4096, "zstd"),
)


@dataclass(frozen=True)
class Weighed:
    """Means over one condition's entries, in bytes."""

    condition: Condition
    entries: int
    json: float  # the prediction's JSON
    payload: float  # the prediction as stored: its JSON, or that compressed
    header: float  # the value's preamble and metadata header
    key: float  # the key's name
    memory_usage: float  # MEMORY USAGE of the key
    used_memory: float  # INFO's used_memory grown while storing, per entry
    example_key: str
    example_header: str  # one entry's metadata header (JSON)

    @property
    def overhead(self) -> float:
        return self.memory_usage - self.payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=500, help="entries stored per condition")
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="predcache-bench-memory-") as tmp:
        work = Path(tmp)
        redis_server = RedisServer(work / "redis").start()
        stack.callback(redis_server.stop)
        model_url = stack.enter_context(model_server())
        os.environ.update(
            {
                "DATABASE_URL": f"sqlite:///{work / 'bench.sqlite3'}",
                "REDIS_URL": redis_server.url,
                "DJANGO_SECRET_KEY": "bench",
                "DJANGO_SETTINGS_MODULE": "predcache_site.settings",
                "PREDCACHE_HOT_SAMPLE_RATE": "0",  # only entries in Redis, no hot-key samples
                "LOG_LEVEL": "WARNING",
            }
        )
        import django

        django.setup()
        from django.core.management import call_command
        from django.test import Client

        call_command("migrate", verbosity=0)
        from caching.runtime import get_runtime
        from caching.services import CLEAR, api_key_create, model_upsert

        api_key = api_key_create(label="bench")
        client = Client(HTTP_AUTHORIZATION=f"Api-Key {api_key}", SERVER_NAME="127.0.0.1")
        store = redis.Redis.from_url(redis_server.url)
        keyspace = get_runtime().keyspace
        rng = random.Random(11)
        results = []
        for number, condition in enumerate(CONDITIONS):
            model, _ = model_upsert(
                name=f"memory{number}",
                backend="http",
                target=f"{model_url}/predict",
                compress_over_bytes=CLEAR if condition.compress_over is None else condition.compress_over,
                compression=condition.compression,
                ttl_seconds=3600,
            )
            predictions = [condition.prediction(rng) for _ in range(args.entries)]
            # The first request also writes the model's generation key: done before the weighing starts.
            client.post(
                f"/v1/models/{model.name}:predict",
                {"instances": [{"id": -1, "return": predictions[0]}]},
                content_type="application/json",
            )
            used_before = store.info("memory")["used_memory"]
            for start in range(0, args.entries, BATCH):
                response = client.post(
                    f"/v1/models/{model.name}:predict",
                    {"instances": [{"id": i, "return": predictions[i]} for i in range(start, start + BATCH)]},
                    content_type="application/json",
                )
                assert response.status_code == 200, response.content[:300]
                assert response["X-Cache"] == "MISS", response["X-Cache"]
            used_after = store.info("memory")["used_memory"]
            namespace = keyspace.namespace(model.pk)
            results.append(weigh(store, namespace, condition, predictions, used_after - used_before))
            print(f"  {condition.name}: {results[-1].memory_usage:,.0f} B per entry", file=sys.stderr)
    report(results, args)


def weigh(store: redis.Redis, namespace: str, condition: Condition, predictions: list, used: int) -> Weighed:
    """Means over the entries of one model's namespace (the first request's too: a copy of the first
    prediction under another instance)."""
    keys = list(store.scan_iter(match=f"{namespace}:e:*", count=1000))
    values = store.mget(keys)
    sizes = []
    for key, value in zip(keys, values, strict=True):
        header = PREAMBLE_BYTES + int.from_bytes(value[2:4], "big")
        sizes.append((len(key), len(value), header, store.memory_usage(key, samples=0)))
    mean = statistics.mean
    return Weighed(
        condition=condition,
        entries=len(sizes),
        json=mean(len(orjson.dumps(prediction)) for prediction in [predictions[0], *predictions]),
        payload=mean(value - header for _, value, header, _ in sizes),
        header=mean(header for _, _, header, _ in sizes),
        key=mean(key for key, _, _, _ in sizes),
        memory_usage=mean(usage for *_, usage in sizes),
        used_memory=used / len(predictions),
        example_key=keys[0].decode(),
        example_header=values[0][PREAMBLE_BYTES : sizes[0][2]].decode(),
    )


def report(results: list[Weighed], args: Any) -> None:
    command = " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    met = all(result.overhead <= TARGET_OVERHEAD_BYTES for result in results)
    lines = [
        "# Redis memory per cached prediction",
        "",
        f"`{command}` on {machine.description()}, {time.strftime('%Y-%m-%d')}. {args.entries:,} entries "
        "per condition, stored by predict requests (in process, through Django's handler); the "
        "bundled redis-server. Means per entry, in bytes. MEMORY USAGE: the key's name, its value and "
        "Redis's bookkeeping for them (allocator size classes included); used_memory: INFO's "
        "used_memory grown while storing, per entry (also the TTL and hash table slots). Overhead: "
        "MEMORY USAGE beyond the prediction as stored (its JSON, or that compressed).",
        "",
        *table(
            [
                "condition",
                "prediction JSON",
                "stored payload",
                "value header",
                "key name",
                "Redis's own",
                "MEMORY USAGE",
                "used_memory",
                "overhead",
                f"overhead <= {TARGET_OVERHEAD_BYTES}",
            ],
            [
                [
                    result.condition.name,
                    f"{result.json:,.0f}",
                    f"{result.payload:,.0f}",
                    f"{result.header:,.0f}",
                    f"{result.key:,.0f}",
                    f"{result.memory_usage - result.payload - result.header - result.key:,.0f}",
                    f"{result.memory_usage:,.0f}",
                    f"{result.used_memory:,.0f}",
                    f"{result.overhead:,.0f}",
                    "yes" if result.overhead <= TARGET_OVERHEAD_BYTES else "**no**",
                ]
                for result in results
            ],
        ),
        "",
        f"- target (overhead at most {TARGET_OVERHEAD_BYTES} bytes per entry): "
        f"{'met' if met else '**not met**'} (overhead "
        f"{min(result.overhead for result in results):,.0f} to "
        f"{max(result.overhead for result in results):,.0f} bytes)",
        "- overhead = value header + key name + Redis's own (MEMORY USAGE less the value and the key "
        "name: its object and dict entry, and the allocator's rounding up)",
        f"- an entry's key: `{results[0].example_key}`; its header: `{results[0].example_header}`",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (REPO / "bench" / "results" / "memory.md").write_text(text)


if __name__ == "__main__":
    main()
