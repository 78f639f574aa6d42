"""Warming in this process (the foreground ``warm``): what it computes, what it leaves, how it ends.

Real Redis and the real HTTP model server; the Celery side is in test_tasks_warming.py.
"""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from caching.models import WarmRun, WarmSet
from caching.runtime import get_runtime
from caching.selectors import model_namespace
from caching.services import CLEAR, model_upsert
from caching.services.warm_loop import warm_min_fresh
from caching.services.warming import (
    WarmBusy,
    warm_run_create,
    warm_run_execute,
    warm_set_warm,
)
from tests.test_policies import age_entries

pytestmark = pytest.mark.django_db


def _warm(model, instances, parameters=None, **options):
    run = warm_run_create(model=model, source="tests", requested_by="tests", total=len(instances))
    return warm_run_execute(run=run, instances=instances, parameters=parameters, **options)


def _sent(backend):
    """The instances of each backend call, in order."""
    return [call["instances"] for call in backend.calls()]


def test_the_foreground_warm_shows_progress_and_a_summary(api, backend, http_model, tmp_path, capsys):
    model_upsert(name="echo", warm_batch_size=10, warm_rate=CLEAR)
    instances = tmp_path / "instances.jsonl"
    instances.write_text("".join(f"[{i}]\n" for i in range(25)))

    call_command("predcache", "warm", "echo", "--file", str(instances), "--parameters", '{"k": 1}')
    printed = capsys.readouterr()

    assert "warming echo: 100%" in printed.err and "25/25" in printed.err
    assert "computed=25, errors=0" in printed.err.replace("cached=0, ", "")
    summary = printed.out.strip().splitlines()[-1]
    assert summary.startswith("warm run ") and " of echo finished in " in summary
    assert summary.endswith("instances=25 computed=25 already_cached=0 errors=0")
    assert [len(call) for call in _sent(backend)] == [10, 10, 5]
    hit = api.predict("echo", {"instances": [[3], [24]], "parameters": {"k": 1}})
    assert hit["X-Cache"] == "HIT"
    run = WarmRun.objects.get()
    assert (run.status, run.requested_by, run.source, run.done) == (
        "finished",
        "cli",
        "file instances.jsonl",
        25,
    )


def test_only_missing_instances_and_those_close_to_expiry_are_computed(api, backend, http_model):
    model = model_upsert(name="echo", ttl_seconds=100, warm_batch_size=100, warm_rate=CLEAR)[0]
    assert warm_min_fresh(ttl_seconds=100) == 25  # PREDCACHE_WARM_MIN_FRESH_FRACTION 0.25
    _warm(model, [[i] for i in range(10)])
    age_entries(model, 80)  # 20 s of freshness left: close to expiry
    api.predict("echo", {"instances": [[i] for i in range(5)]}, **{"Cache-Control": "no-cache"})
    backend.reset_calls()

    run = _warm(model, [[i] for i in range(15)])

    assert (run.status, run.total, run.computed, run.already_cached, run.errors) == ("finished", 15, 10, 5, 0)
    assert _sent(backend) == [[[i] for i in range(5, 15)]]
    assert (
        api.predict("echo", {"instances": [[7], [12]]}, **{"Cache-Control": "min-fresh=90"})["X-Cache"]
        == "HIT"
    )


def test_a_set_on_an_interval_renews_what_would_expire_before_its_next_run(backend, http_model):
    model = model_upsert(name="echo", ttl_seconds=1000, warm_rate=CLEAR)[0]
    warm_set = WarmSet.objects.create(model=model, name="top", instances=[[1], [2]], every_seconds=600)
    warm_set_warm(warm_set=warm_set, requested_by="tests")
    age_entries(model, 500)  # 500 s left: past a quarter of the TTL, short of the interval
    backend.reset_calls()

    run = warm_set_warm(warm_set=warm_set, requested_by="tests")

    assert (run.computed, run.already_cached) == (2, 0)
    assert warm_min_fresh(ttl_seconds=1000, every_seconds=600) == 600


def test_duplicates_are_computed_once_and_rejected_instances_do_not_stop_the_run(api, backend, http_model):
    model = model_upsert(name="echo", warm_batch_size=8, warm_rate=CLEAR)[0]
    instances = [[i] for i in range(20)]
    instances[5] = {"reject": "no such feature"}  # the model answers 400
    instances[13] = {"crash": "shape mismatch"}  # the model answers 500
    instances.append([3])

    run = _warm(model, instances)

    assert (run.status, run.total, run.done, run.computed, run.errors) == ("finished", 20, 20, 18, 2)
    assert run.message == "1 duplicate instances skipped; instance 14 failed: model server answered HTTP 500"
    # Halves of a refused batch find the bad instance; each good one is computed once.
    answered = [call for call in _sent(backend) if all(isinstance(instance, list) for instance in call)]
    computed = sorted(instance[0] for call in answered for instance in call)
    assert computed == [i for i in range(20) if i not in (5, 13)]
    refused = [call for call in _sent(backend) if call not in answered]
    assert [{"reject": "no such feature"}] in refused and [{"crash": "shape mismatch"}] in refused
    assert (
        api.predict("echo", {"instances": [[i] for i in range(20) if i not in (5, 13)]})["X-Cache"] == "HIT"
    )


def test_a_model_that_is_down_stops_the_run(backend, http_model):
    model = model_upsert(name="echo", warm_batch_size=5, warm_rate=CLEAR)[0]
    backend.control(status=503, message="overloaded")

    run = _warm(model, [[i] for i in range(20)])

    assert (run.status, run.done, run.computed) == ("failed", 0, 0)
    assert run.message.startswith("stopped at 0 of 20 instances: ")
    assert "503" in run.message or "unavailable" in run.message
    assert len(backend.calls()) == 1  # not one call per batch against a model that is down


def test_the_cli_fails_with_the_reason_when_the_model_is_down(backend, http_model, tmp_path):
    backend.control(status=503)
    instances = tmp_path / "i.jsonl"
    instances.write_text("[1]\n")
    with pytest.raises(CommandError, match=r"failed in .* s: instances=1 computed=0 .*: stopped at 0 of 1"):
        call_command("predcache", "warm", "echo", "--file", str(instances))


def test_a_model_that_is_not_cached_is_not_warmed(backend, http_model):
    model = model_upsert(name="echo", mode="bypass")[0]
    run = _warm(model, [[1]])
    assert (run.status, run.message) == (
        "failed",
        "stopped at 0 of 1 instances: echo is not cached (mode bypass): a warm would store nothing",
    )
    assert backend.calls() == []


def test_a_model_with_admission_is_warmed_at_once(api, backend, http_model):
    model = model_upsert(name="echo", admit_after=3, warm_rate=CLEAR)[0]
    assert _warm(model, [[1]]).computed == 1
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"


def test_a_second_warm_of_the_model_waits_for_the_first(backend, http_model, tmp_path):
    runtime = get_runtime()
    namespace = model_namespace(model=http_model)
    assert runtime.store.job_lock(namespace, "warm", "someone-else", 30)

    with pytest.raises(WarmBusy):
        _warm(http_model, [[1]])
    assert WarmRun.objects.get().status == "queued"
    assert "waiting: another warm of echo is running" in WarmRun.objects.get().message
    instances = tmp_path / "i.jsonl"
    instances.write_text("[1]\n")
    with pytest.raises(CommandError, match="another warm of echo is running: try again when it ends"):
        call_command("predcache", "warm", "echo", "--file", str(instances))
    assert backend.calls() == []


def test_a_redelivered_task_takes_back_its_lock_and_its_run(backend, http_model):
    """The first delivery died holding the lock and marked running: the same task id resumes both."""
    runtime = get_runtime()
    namespace = model_namespace(model=http_model)
    run = WarmRun.objects.create(
        model=http_model,
        source="tests",
        requested_by="tests",
        task_id="task-1",
        status="running",
        total=4,
        done=2,
    )
    lost = WarmRun.objects.create(model=http_model, source="older", requested_by="tests", status="running")
    assert runtime.store.job_lock(namespace, "warm", "task-1:dead", 30)

    with pytest.raises(WarmBusy):  # another task id waits
        _warm(http_model, [[1]], owner="task-2")
    resumed = warm_run_execute(run=run, instances=[[1], [2], [3], [4]], parameters=None, owner="task-1")

    assert (resumed.status, resumed.done, resumed.computed) == ("finished", 4, 4)
    assert resumed.message.startswith("restarted: its worker was lost at 2 of 4 instances")
    lost.refresh_from_db()
    assert lost.status == "failed" and f"run {run.pk} warms echo since" in lost.message
    assert not runtime.client.exists(runtime.keyspace.job(namespace, "warm"))  # given back
    # A delivery of a task that has ended does nothing.
    assert warm_run_execute(run=resumed, instances=[[9]], parameters=None, owner="task-1").done == 4
    assert json.dumps(_sent(backend)) == "[[[1], [2], [3], [4]]]"


def test_a_run_whose_worker_keeps_dying_is_given_up(backend, http_model):
    """Each redelivery of a warm that kills its worker would kill the next one too: three and out."""
    run = WarmRun.objects.create(
        model=http_model, source="tests", requested_by="tests", task_id="t", status="running", attempts=3
    )
    ended = warm_run_execute(run=run, instances=[[1]], parameters=None, owner="t")
    assert (ended.status, ended.message) == ("failed", "given up: its worker was lost 3 times mid-run")
    assert backend.calls() == []


def test_a_delivery_whose_lock_was_taken_over_leaves_the_run_to_the_new_holder(backend, http_model):
    """A delivery redelivered while the first still runs: the first stops and writes nothing."""
    runtime = get_runtime()
    namespace = model_namespace(model=http_model)
    run = WarmRun.objects.create(model=http_model, source="tests", requested_by="tests", task_id="t")
    instances = [[number] for number in range(6)]

    def take_over(progress: WarmRun) -> None:  # after the first batch, another delivery takes the lock
        runtime.client.set(runtime.keyspace.job(namespace, "warm"), "t:second")
        WarmRun.objects.filter(pk=progress.pk).update(message="the second delivery's", done=0)

    from caching.models import CachePolicy

    CachePolicy.objects.filter(model=http_model).update(warm_batch_size=2)
    warm_run_execute(run=run, instances=instances, parameters=None, owner="t", on_progress=take_over)
    run.refresh_from_db()
    assert (run.status, run.message) == ("running", "the second delivery's")  # untouched by the first
    assert len(backend.calls()) == 1  # the first stopped after its first batch
    runtime.client.delete(runtime.keyspace.job(namespace, "warm"))
