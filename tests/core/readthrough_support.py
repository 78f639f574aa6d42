"""What the read-through's unit tests run on: the in-memory store, a clock, a model in process."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from caching.backends.base import BackendResult, BackendUnavailable
from caching.core.memory_store import MemoryPredictionStore
from caching.core.readthrough import ReadThroughCache
from caching.core.revalidation import BackgroundRefresher
from caching.core.spec import CacheSpec
from caching.core.stats import StatsRecorder


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Model:
    """A backend in process: echoes each instance, reports a version, fails when told to."""

    identity: str = "model"
    version: str | None = None
    failure: Exception | None = None
    calls: list[list[Any]] = field(default_factory=list)

    def predict(self, instances: Sequence[Any], parameters: dict[str, Any] | None) -> BackendResult:
        self.calls.append(list(instances))
        if self.failure is not None:
            raise self.failure
        predictions = [
            instance["return"]
            if isinstance(instance, dict) and "return" in instance
            else {"echo": instance, "v": self.version}
            for instance in instances
        ]
        return BackendResult(predictions, model_version_id=self.version)

    def verify(self) -> None:
        pass

    def outdated(self) -> bool:
        return False

    def check(self, instances: Sequence[Any], parameters: dict[str, Any] | None) -> None:
        pass

    def down(self) -> None:
        self.failure = BackendUnavailable("model down")


class InlineRefresher(BackgroundRefresher):
    """Runs a stale-while-revalidate refresh when the test says so, on the test's thread."""

    def __init__(self) -> None:
        super().__init__(workers=1)
        self.queued: list[Callable[[], None]] = []

    def submit(self, refresh: Callable[[], None], *, name: str) -> bool:
        self.queued.append(refresh)
        return True

    def run_all(self) -> None:
        queued, self.queued = self.queued, []
        for refresh in queued:
            refresh()


@dataclass
class Setup:
    clock: Clock
    store: Any
    stats: StatsRecorder
    cache: ReadThroughCache
    refresher: InlineRefresher
    sleeps: list[float]
    on_sleep: list[Callable[[], None]]


def make_cache(*, clock: Clock | None = None, store: Any = None, **options: Any) -> Setup:
    """A read-through cache over ``store`` (a new in-memory one by default) on ``clock``."""
    clock = clock or Clock()
    store = store or MemoryPredictionStore(clock=clock)
    stats = StatsRecorder()
    refresher = InlineRefresher()
    sleeps: list[float] = []
    on_sleep: list[Callable[[], None]] = []

    def sleep(seconds: float) -> None:  # time passes only as the test says: no real waiting
        sleeps.append(seconds)
        clock.now += seconds
        if on_sleep:
            on_sleep.pop(0)()

    cache = ReadThroughCache(
        store,
        max_depth=32,
        stats=stats,
        clock=clock,
        monotonic=clock,
        sleep=sleep,
        refresher=refresher,
        **options,
    )
    return Setup(clock, store, stats, cache, refresher, sleeps, on_sleep)


def spec(**policy: Any) -> CacheSpec:
    return CacheSpec(
        namespace="pc{t.m1}",
        model_name="echo",
        model_identity="echo|local|x",
        model_version="",
        ttl_seconds=policy.pop("ttl_seconds", 60),
        **policy,
    )
