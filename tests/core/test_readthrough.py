"""The read-through logic over the in-memory store: no Django, no Redis, no real time."""

from __future__ import annotations

import pytest

from caching.backends.base import BackendError, BackendUnavailable
from caching.core.breaker import BreakerRegistry, CircuitBreaker
from caching.core.memory_store import MemoryPredictionStore
from caching.core.spec import Directives, NotCached
from caching.core.store import CacheUnavailable
from tests.core.readthrough_support import Model, make_cache, spec

ECHO = spec()


def echoed(prediction):
    return [p["echo"] for p in prediction.predictions]


def test_a_repeated_instance_is_a_hit_and_the_model_is_called_once():
    setup, model = make_cache(), Model()
    first = setup.cache.predict(ECHO, model, [{"x": 1}], {"k": 3})
    second = setup.cache.predict(ECHO, model, [{"x": 1.0}], {"k": 3.0})
    assert (first.cache_status, second.cache_status) == ("MISS", "HIT")
    assert (second.hits, second.misses, second.age) == (1, 0, 0)
    assert second.predictions == first.predictions and len(model.calls) == 1


def test_requests_are_counted_as_answered_from_the_cache_or_by_the_model_with_their_time():
    setup, model = make_cache(), Model()
    model_time = 0.25

    def slow_predict(instances, parameters, _predict=model.predict):
        setup.clock.now += model_time
        return _predict(instances, parameters)

    model.predict = slow_predict  # type: ignore[method-assign]
    setup.cache.predict(ECHO, model, [[1]], None)
    setup.cache.predict(ECHO, model, [[1]], None)
    setup.cache.predict(ECHO, model, [[1], [2]], None)
    counts = setup.stats.pending(ECHO.namespace)
    assert (counts["cached_requests"], counts["computed_requests"]) == (1, 2)
    assert counts["cached_us"] == 0 and counts["computed_us"] == 2 * 250_000


def test_a_partial_batch_with_a_duplicate_sends_only_the_distinct_misses_in_order():
    setup, model = make_cache(), Model()
    setup.cache.predict(ECHO, model, [{"n": 1}, {"n": 2}], None)
    batch = [{"n": 10}, {"n": 1}, {"n": 11}, {"n": 2}, {"n": 10}]
    answer = setup.cache.predict(ECHO, model, batch, None)
    assert (answer.cache_status, answer.hits, answer.misses) == ("PARTIAL", 2, 3)
    assert echoed(answer) == batch
    assert model.calls[-1] == [{"n": 10}, {"n": 11}]


@pytest.mark.parametrize("falsy", [0, None, False, "", [], {}])
def test_falsy_predictions_are_hits(falsy):
    setup, model = make_cache(), Model()
    setup.cache.predict(ECHO, model, [{"return": falsy}], None)
    hit = setup.cache.predict(ECHO, model, [{"return": falsy}], None)
    assert (hit.cache_status, hit.predictions) == ("HIT", [falsy])


def test_a_purge_makes_the_next_request_miss():
    setup, model = make_cache(), Model()
    setup.cache.predict(ECHO, model, [[1]], None)
    setup.store.purge(ECHO.namespace)
    assert setup.cache.predict(ECHO, model, [[1]], None).cache_status == "MISS"
    assert setup.cache.predict(ECHO, model, [[1]], None).cache_status == "HIT"


def test_hits_of_an_unchanged_entry_parse_it_once_and_a_rewritten_entry_is_read_anew():
    setup, model = make_cache(), Model()
    setup.cache.predict(ECHO, model, [[1]], None)
    first = setup.cache.predict(ECHO, model, [[1]], None)
    again = setup.cache.predict(ECHO, model, [[1]], None)
    assert first.predictions[0] is again.predictions[0]  # the same stored bytes: decoded once

    setup.store.purge(ECHO.namespace)
    model.version = "2"
    assert setup.cache.predict(ECHO, model, [[1]], None).cache_status == "MISS"
    rewritten = setup.cache.predict(ECHO, model, [[1]], None)
    assert (rewritten.cache_status, rewritten.predictions) == ("HIT", [{"echo": [1], "v": "2"}])


def test_a_new_model_version_retires_the_old_ones_entries_and_one_answer_has_one_version():
    setup, model = make_cache(), Model(version="1")
    setup.cache.predict(ECHO, model, [[1]], None)
    model.version = "2"
    moved = setup.cache.predict(ECHO, model, [[2], [1]], None)
    assert moved.version_change is not None and moved.version_change.current == "/2"
    assert [p["v"] for p in moved.predictions] == ["2", "2"]  # [1] recomputed by v2 too
    assert model.calls[1:] == [[[2]], [[1]]]
    assert setup.cache.predict(ECHO, model, [[1], [2]], None).cache_status == "HIT"


def test_stale_while_revalidate_serves_at_once_and_refreshes_once():
    setup, model = make_cache(), Model()
    policy = spec(stale_while_revalidate=300)
    setup.cache.predict(policy, model, [[1]], None)
    setup.clock.now += 100
    stale = [setup.cache.predict(policy, model, [[1]], None) for _ in range(3)]
    assert [answer.cache_status for answer in stale] == ["STALE"] * 3
    assert len(model.calls) == 1 and len(setup.refresher.queued) == 1  # one refresh: the lock
    setup.refresher.run_all()
    fresh = setup.cache.predict(policy, model, [[1]], None)
    assert (fresh.cache_status, fresh.age, len(model.calls)) == ("HIT", 0, 2)


def test_stale_if_error_serves_an_expired_entry_only_when_the_model_fails():
    setup, model = make_cache(), Model()
    policy = spec(stale_if_error=3600)
    setup.cache.predict(policy, model, [[1]], None)
    setup.clock.now += 600
    model.down()
    served = setup.cache.predict(policy, model, [[1]], None)
    assert (served.cache_status, echoed(served)) == ("STALE", [[1]])
    with pytest.raises(BackendUnavailable):
        setup.cache.predict(policy, model, [[1], [2]], None)  # [2] has nothing stale


def test_past_every_window_the_entry_is_a_miss():
    setup, model = make_cache(), Model()
    setup.cache.predict(ECHO, model, [[1]], None)
    setup.clock.now += 61
    assert setup.cache.predict(ECHO, model, [[1]], None).cache_status == "MISS"


def test_admission_stores_an_instance_once_it_missed_often_enough():
    setup, model = make_cache(), Model()
    policy = spec(admit_after=2)
    assert not setup.cache.predict(policy, model, [[1]], None).stored
    assert setup.cache.predict(policy, model, [[1]], None).stored
    assert setup.cache.predict(policy, model, [[1]], None).cache_status == "HIT"


def test_min_fresh_recomputes_entries_that_expire_too_soon():
    setup, model = make_cache(), Model()
    setup.cache.predict(ECHO, model, [[1]], None)
    setup.clock.now += 50  # fresh for 10 more seconds
    kept = setup.cache.predict(ECHO, model, [[1]], None, Directives(min_fresh=5))
    renewed = setup.cache.predict(ECHO, model, [[1]], None, Directives(min_fresh=30))
    assert (kept.cache_status, renewed.cache_status) == ("HIT", "MISS")


def test_max_age_no_cache_and_only_if_cached():
    setup, model = make_cache(), Model()
    setup.cache.predict(ECHO, model, [[1]], None)
    setup.clock.now += 20
    assert setup.cache.predict(ECHO, model, [[1]], None, Directives(max_age=10)).cache_status == "MISS"
    assert setup.cache.predict(ECHO, model, [[1]], None, Directives(no_cache=True)).cache_status == "MISS"
    assert (
        setup.cache.predict(ECHO, model, [[1]], None, Directives(only_if_cached=True)).cache_status == "HIT"
    )
    with pytest.raises(NotCached):
        setup.cache.predict(ECHO, model, [[2]], None, Directives(only_if_cached=True))
    assert len(model.calls) == 3


def test_a_request_waits_for_the_one_computing_its_instance():
    setup, model = make_cache(), Model()
    [digest] = setup.cache.instance_digests(ECHO, [[4]], None)
    assert setup.store.acquire(ECHO.namespace, [digest], "other", 30) == {digest}

    def the_other_request_answers():  # another process, on the same store
        setup.store.release(ECHO.namespace, [digest], "other")
        make_cache(clock=setup.clock, store=setup.store).cache.predict(ECHO, Model(), [[4]], None)

    setup.on_sleep.append(the_other_request_answers)
    answer = setup.cache.predict(ECHO, model, [[4]], None)
    assert echoed(answer) == [[4]] and model.calls == []
    assert setup.stats.pending(ECHO.namespace)["single_flight_waits"] == 1


def test_a_waiter_computes_itself_after_its_bound():
    setup, model = make_cache(single_flight_wait=0.2), Model()
    [digest] = setup.cache.instance_digests(ECHO, [[4]], None)
    setup.store.acquire(ECHO.namespace, [digest], "stuck", 30)
    answer = setup.cache.predict(ECHO, model, [[4]], None)
    assert echoed(answer) == [[4]] and model.calls == [[[4]]]
    assert sum(setup.sleeps) >= 0.2
    assert setup.stats.pending(ECHO.namespace)["single_flight_timeouts"] == 1


def test_a_failing_model_opens_its_breaker():
    setup, model = (
        make_cache(backend_breakers=BreakerRegistry(failure_threshold=2, reset_seconds=60)),
        Model(),
    )
    model.down()
    for instance in ([1], [2]):
        with pytest.raises(BackendUnavailable):
            setup.cache.predict(ECHO, model, [instance], None)
    with pytest.raises(BackendUnavailable, match="circuit open"):
        setup.cache.predict(ECHO, model, [[3]], None)
    assert len(model.calls) == 2


def test_a_models_own_error_does_not_open_its_breaker():
    setup, model = make_cache(backend_breakers=BreakerRegistry(failure_threshold=1)), Model()
    model.failure = BackendError("model broke")
    for _ in range(3):
        with pytest.raises(BackendError, match="model broke"):
            setup.cache.predict(ECHO, model, [[1]], None)
    assert len(model.calls) == 3


class FailingStore:
    def __getattr__(self, name):
        def fail(*args, **kwargs):
            self.calls += 1
            raise CacheUnavailable("down")

        return fail

    calls = 0


def test_a_failing_store_is_passed_through_and_then_skipped_by_its_breaker():
    setup, model = (
        make_cache(redis_breaker=CircuitBreaker("redis", failure_threshold=2, reset_seconds=60)),
        Model(),
    )
    store = FailingStore()
    setup.cache.store = store
    answers = [setup.cache.predict(ECHO, model, [[n]], None) for n in range(4)]
    assert [a.cache_status for a in answers] == ["BYPASS"] * 4
    assert store.calls == 2 and len(model.calls) == 4


class Counting:
    """The store's calls, by method name: a stand-in for round trips."""

    def __init__(self, store):
        self.store = store
        self.calls: list[str] = []

    def __getattr__(self, name):
        method = getattr(self.store, name)

        def counted(*args, **kwargs):
            locking = name == "lookup" and kwargs.get("locks") is not None
            self.calls.append("lookup+locks" if locking else name)
            return method(*args, **kwargs)

        return counted


def test_a_miss_is_two_store_calls_and_a_hit_is_one_plain_lookup():
    counting = Counting(MemoryPredictionStore())
    setup, model = make_cache(store=counting), Model()
    setup.cache.predict(ECHO, model, [[1], [2]], None)
    assert counting.calls == ["lookup+locks", "save"]
    counting.calls.clear()
    setup.cache.predict(ECHO, model, [[1], [2]], None)
    assert counting.calls == ["lookup"]
