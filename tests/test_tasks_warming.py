"""Warming on real Celery workers (prefork), real Redis, the real HTTP model server; RabbitMQ too.

Nothing waits by sleeping: tests poll the warm run's row (what an operator watches) or the model
server's calls, with a bound.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from celery import current_app
from django.conf import settings

from caching.models import WarmRun, WarmSet
from caching.services import CLEAR, model_upsert
from caching.services.warm_sets import warm_set_upsert
from caching.services.warming import warm_set_enqueue
from tests.support.celery_worker import Broker, Worker, celery_worker, new_queue, use_broker
from tests.support.processes import REPO, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _model(backend, name: str, **policy: Any):
    model, _ = model_upsert(name=name, backend="http", target=backend.predict_url, **policy)
    return model


def _warm_set(model, count: int, *, start: int = 0, name: str = "top"):
    warm_set, _ = warm_set_upsert(
        model=model, name=name, instances=[{"i": i} for i in range(start, start + count)]
    )
    return warm_set


def _run_when(
    predicate: Callable[[WarmRun], bool], *, timeout: float = 60, what: str, **lookup: Any
) -> WarmRun:
    """The warm run matching ``lookup`` once ``predicate`` holds for it."""
    found: list[WarmRun] = []

    def holds() -> bool:
        run = WarmRun.objects.filter(**lookup).first()
        if run is not None and predicate(run):
            found.append(run)
            return True
        return False

    wait_until(holds, timeout=timeout, what=what)
    return found[0]


def _ended(**lookup: Any) -> WarmRun:
    return _run_when(lambda run: run.status in ("finished", "failed"), what="the warm run to end", **lookup)


def _instances_sent(backend) -> list[Any]:
    return [instance for call in backend.calls() for instance in call["instances"]]


def _all_cached(api, model_name: str, instances: list[Any]) -> bool:
    response = api.predict(model_name, {"instances": instances}, **{"Cache-Control": "only-if-cached"})
    return response.status_code == 200 and response["X-Cache"] == "HIT"


def test_a_warm_set_of_250_is_warmed_by_the_worker_in_a_few_batched_calls(on_worker, api, backend):
    model = _model(backend, "w250", warm_batch_size=100, warm_rate=CLEAR)
    warm_set = _warm_set(model, 250)

    # As the schedule sends it: predcache.warm_set with the warm set's id alone.
    current_app.send_task("predcache.warm_set", args=[warm_set.pk])
    run = _ended(warm_set=warm_set)

    assert (run.status, run.total, run.done, run.computed, run.already_cached, run.errors) == (
        "finished", 250, 250, 250, 0, 0,
    )  # fmt: skip
    assert run.requested_by == "schedule" and run.task_id
    assert [len(call["instances"]) for call in backend.calls()] == [100, 100, 50]
    backend.reset_calls()
    response = api.predict("w250", {"instances": [{"i": i} for i in range(100, 150)]})
    assert (response.status_code, response["X-Cache"], response["X-Cache-Hits"]) == (200, "HIT", "50")
    assert response.json()["predictions"][0] == {"echo": {"i": 100}, "parameters": None}
    assert backend.calls() == []


def test_warm_now_in_the_admin_runs_on_the_worker_and_the_model_page_shows_the_run(
    on_worker, admin_client, backend
):
    model = _model(backend, "admin-warmed", warm_batch_size=20, warm_rate=CLEAR)
    warm_set = _warm_set(model, 30)

    response = admin_client.post(
        "/admin/caching/warmset/", {"action": "warm_now", "_selected_action": [str(warm_set.pk)]}, follow=True
    )
    assert b"Queued a warm of 1 warm set: admin-warmed/top" in response.content
    run = _ended(warm_set=warm_set)
    assert (run.status, run.computed, run.requested_by) == ("finished", 30, "admin")

    page = admin_client.get(f"/admin/caching/modelendpoint/{model.pk}/change/").content.decode()
    assert "recent warm runs" in page.lower()
    assert 'class="warm-run-finished"' in page and "30/30" in page and "warm set top" in page


def test_two_warms_of_one_model_at_once_compute_each_instance_once(on_worker, api, backend):
    model = _model(backend, "overlap", warm_batch_size=25, warm_rate=CLEAR)
    first, second = _warm_set(model, 100, name="a"), _warm_set(model, 100, start=50, name="b")
    backend.control(delay=0.1)  # both tasks are on the worker while the first still warms

    warm_set_enqueue(warm_set=first, requested_by="tests")
    warm_set_enqueue(warm_set=second, requested_by="tests")
    runs = [_ended(warm_set=first), _ended(warm_set=second)]

    sent = Counter(instance["i"] for instance in _instances_sent(backend))
    assert sorted(sent) == list(range(150)) and set(sent.values()) == {1}
    assert [run.status for run in runs] == ["finished", "finished"]
    earlier, later = sorted(runs, key=lambda run: run.started_at)
    assert earlier.finished_at <= later.started_at  # one after the other: never two paced warms at once
    assert sorted((run.computed, run.already_cached) for run in runs) == [(50, 50), (100, 0)]
    assert "retry" in on_worker.log_text().lower()  # the second waited for the lock, then ran
    assert _all_cached(api, "overlap", [{"i": i} for i in range(150)])


def test_the_warm_rate_holds_at_the_model_server(on_worker, backend):
    rate, batch = 20, 5
    model = _model(backend, "paced", warm_batch_size=batch, warm_rate=rate)
    warm_set = _warm_set(model, 40)

    warm_set_enqueue(warm_set=warm_set, requested_by="tests")
    assert _ended(warm_set=warm_set).computed == 40

    times, sizes = backend.call_times(), [len(call["instances"]) for call in backend.calls()]
    assert sizes == [batch] * 8
    # Each call's instances take 1/rate s each, from when it was sent: by call j the model has
    # had at most rate * elapsed instances. Cumulative, so one call recorded late (the server
    # or the machine busy) cannot make a later gap look short. (20 ms of slack for arrival.)
    for j in range(1, len(times)):
        assert times[j] - times[0] >= sum(sizes[:j]) / rate - 0.02, (j, times)
    assert sum(sizes[:-1]) / (times[-1] - times[0]) <= rate * 1.01


def test_warm_async_prints_the_task_id_last_and_the_worker_runs_it(
    on_worker, broker, redis_url, django_db_blocker, api, backend, tmp_path
):
    from tests.support.gunicorn_server import environment_serving_the_test_database

    _model(backend, "queued", warm_batch_size=50, warm_rate=CLEAR)
    instances = tmp_path / "top.csv"
    instances.write_text("a,b\n" + "".join(f"{i},x{i}\n" for i in range(60)))
    # As a script runs it: its own process, which sends the task and exits.
    environment = {
        **os.environ,
        **environment_serving_the_test_database(django_db_blocker, redis_url, name="cli"),
        **broker.environment(),
        "PREDCACHE_KEY_PREFIX": on_worker.key_prefix,
        "PREDCACHE_BACKGROUND_IN_WORKERS": "true",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
    }
    command = [
        "manage.py",
        "predcache",
        "warm",
        "queued",
        "--file",
        str(instances),
        "--parameters",
        '{"p": 1}',
    ]
    printed = subprocess.run(
        [sys.executable, *command, "--async"], cwd=REPO, env=environment, capture_output=True, text=True
    )

    assert printed.returncode == 0, printed.stderr
    task_id = printed.stdout.strip().splitlines()[-1]
    assert "queued warm run" in printed.stderr and "Task id (next line)" in printed.stderr
    run = _ended(task_id=task_id)
    assert (run.status, run.computed, run.source, run.requested_by) == ("finished", 60, "file top.csv", "cli")
    assert f"predcache.warm_instances[{task_id}]" in on_worker.log_text()
    assert not _all_cached(api, "queued", [{"a": 59, "b": "x59"}])  # asked without its parameters
    hit = api.predict("queued", {"instances": [{"a": 59, "b": "x59"}], "parameters": {"p": 1}})
    assert hit["X-Cache"] == "HIT"


# --- a worker killed mid-warm ------------------------------------------------------------------


@contextmanager
def _sent_to(own: Broker, session: Broker) -> Iterator[Broker]:
    """Point this process's Celery app at ``own`` for the block, then back at the session's broker."""
    use_broker(own)
    try:
        yield own
    finally:
        use_broker(session)


@pytest.fixture
def worker_environment(redis_url: str, django_db_blocker: Any, settings: Any) -> dict[str, str]:
    """What this test's own workers run with; this process shares their cache keys."""
    from tests.support.gunicorn_server import environment_serving_the_test_database

    environment = environment_serving_the_test_database(django_db_blocker, redis_url, name="killed")
    settings.PREDCACHE_KEY_PREFIX = environment["PREDCACHE_KEY_PREFIX"]
    settings.PREDCACHE_BACKGROUND_IN_WORKERS = True
    return environment


def _kill_mid_warm(worker: Worker, backend, model_name: str) -> WarmRun:
    """Let two batches be stored, then kill ``worker`` while the model server holds its next call."""
    run = _run_when(lambda run: run.computed >= 20, what="two stored batches", model__name=model_name)
    backend.control(hold=True)
    backend.reset_calls()  # calls arriving from now on are held
    wait_until(lambda: len(backend.calls()) >= 1, timeout=30, what="a held call")
    worker.kill()
    backend.control()
    backend.release()
    return run


def _served_correctly(api, model_name: str, instances: list[Any]) -> int:
    """How many ``instances`` the cache answers alone; each answer must be the instance's own."""
    cached = 0
    for instance in instances:
        response = api.predict(model_name, {"instances": [instance]}, **{"Cache-Control": "only-if-cached"})
        if response.status_code == 200:
            assert response.json()["predictions"] == [{"echo": instance, "parameters": None}]
            cached += 1
        else:
            assert response.status_code == 504
    return cached


def test_a_worker_killed_mid_warm_leaves_only_correct_entries_and_a_rerun_completes(
    broker, worker_environment, redis_url, api, backend, tmp_path
):
    from tests.conftest import SESSION_PREFIX

    # A broker of this test's own (key prefix, queue): the killed worker's unacknowledged task
    # stays in it, away from other workers, which would otherwise deliver it again.
    own = Broker(
        url=redis_url, key_prefix=f"{SESSION_PREFIX}celery-{uuid.uuid4().hex[:6]}:", queue=new_queue()
    )
    environment = {**worker_environment, **own.environment()}
    # A warm starts no batch that could outlast its time limit: calls take at most 2 s here.
    model = _model(backend, "killed", warm_batch_size=10, warm_rate=CLEAR, timeout_seconds=2)
    warm_set = _warm_set(model, 60)
    instances = warm_set.instances
    backend.control(delay=0.2)

    with _sent_to(own, broker):
        # The first worker's warm lock lives its hard time limit: 8 s, then the rerun may start.
        first_environment = {**environment, "PREDCACHE_TASK_TIME_LIMIT_SECONDS": "8"}
        with celery_worker(tmp_path / "first", environment=first_environment) as first:
            warm_set_enqueue(warm_set=warm_set, requested_by="tests")
            killed = _kill_mid_warm(first, backend, "killed")

        cached = _served_correctly(api, "killed", instances)
        assert 20 <= cached < 60
        assert WarmRun.objects.get(pk=killed.pk).status == "running"  # its worker died with it

        with celery_worker(tmp_path / "second", environment=environment):
            rerun = warm_set_enqueue(warm_set=warm_set, requested_by="tests")
            rerun = _ended(pk=rerun.pk)

    assert (rerun.status, rerun.computed, rerun.already_cached) == ("finished", 60 - cached, cached)
    killed.refresh_from_db()
    assert killed.status == "failed"
    assert (
        killed.message.startswith("its worker was lost at ")
        and f"run {rerun.pk} warms killed" in killed.message
    )
    assert _served_correctly(api, "killed", instances) == 60


# --- RabbitMQ as the broker ----------------------------------------------------------------------


@pytest.fixture
def rabbitmq(broker: Broker) -> Iterator[Broker]:
    """A queue of this test's own on the machine's RabbitMQ (deleted afterwards); skips without one."""
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        pytest.skip("no RabbitMQ answers on 127.0.0.1:5672 (guest/guest): the RabbitMQ broker is not tested")
    own = Broker(url=RABBITMQ_URL, key_prefix="", queue=new_queue())
    with _sent_to(own, broker):
        yield own
    from kombu import Connection

    with Connection(RABBITMQ_URL) as connection:
        connection.default_channel.queue_delete(own.queue)


def test_the_same_warm_works_with_rabbitmq_as_the_broker(
    rabbitmq, worker_environment, api, backend, tmp_path
):
    model = _model(backend, "rabbit", warm_batch_size=40, warm_rate=CLEAR)
    warm_set = _warm_set(model, 100)

    with celery_worker(tmp_path, environment={**worker_environment, **rabbitmq.environment()}) as worker:
        current_app.send_task("predcache.warm_set", args=[warm_set.pk])
        run = _ended(warm_set=warm_set)

    assert (run.status, run.computed) == ("finished", 100)
    assert [len(call["instances"]) for call in backend.calls()] == [40, 40, 20]
    assert "amqp://guest:**@127.0.0.1:5672//" in worker.log_text()
    assert _all_cached(api, "rabbit", warm_set.instances)


def test_with_rabbitmq_a_killed_warm_is_delivered_again_and_resumes_its_run(
    rabbitmq, worker_environment, api, backend, tmp_path
):
    model = _model(backend, "rabbit-killed", warm_batch_size=10, warm_rate=CLEAR)
    warm_set = _warm_set(model, 60)
    # Slow enough that the warm is still running when the test sees two batches stored and holds
    # the model (at 0.2 s a call it could end first on a loaded machine).
    backend.control(delay=0.5)
    environment = {**worker_environment, **rabbitmq.environment()}

    with celery_worker(tmp_path / "first", environment=environment) as first:
        queued = warm_set_enqueue(warm_set=warm_set, requested_by="tests")
        _kill_mid_warm(first, backend, "rabbit-killed")
    cached = _served_correctly(api, "rabbit-killed", warm_set.instances)

    # RabbitMQ gives the unacknowledged task back when its worker's connection drops: the next
    # worker gets the same task, takes back its lock at once and finishes the same run.
    with celery_worker(tmp_path / "second", environment=environment):
        run = _ended(pk=queued.pk)

    assert (run.status, run.computed, run.already_cached) == ("finished", 60 - cached, cached)
    assert run.message.startswith("restarted: its worker was lost at ")
    assert WarmRun.objects.filter(model=model).count() == 1
    assert _served_correctly(api, "rabbit-killed", warm_set.instances) == 60


def test_warm_set_rows_are_what_the_tasks_read(on_worker, backend):
    """A deleted warm set is no error: a schedule that fires after it is gone does nothing."""
    model = _model(backend, "gone")
    warm_set = _warm_set(model, 3)
    warm_set_id = warm_set.pk
    warm_set.delete()
    result = current_app.send_task("predcache.warm_set", args=[warm_set_id])
    wait_until(
        lambda: f"predcache.warm_set[{result.id}] succeeded" in on_worker.log_text(), timeout=30, what="it"
    )
    assert not WarmRun.objects.exists() and not WarmSet.objects.exists()
    assert backend.calls() == []


def test_the_workers_warm_shows_in_the_metrics_of_another_process(on_worker, backend):
    from django.test import Client
    from prometheus_client.parser import text_string_to_metric_families

    model = _model(backend, "metrics-warmed", warm_batch_size=10, warm_rate=CLEAR)
    warm_set = _warm_set(model, 12)
    current_app.send_task("predcache.warm_set", args=[warm_set.pk])
    _ended(warm_set=warm_set)
    seen: dict[str, float] = {}

    def counted() -> bool:
        # The worker shares this process's PROMETHEUS_MULTIPROC_DIR: /metrics here adds its file.
        text = Client().get("/metrics").content.decode()
        seen.clear()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("model") == "metrics-warmed":
                    seen[sample.name + str(sorted(sample.labels.items()))] = sample.value
        return bool(
            seen.get("predcache_warm_runs_total[('model', 'metrics-warmed'), ('status', 'finished')]")
        )

    wait_until(counted, timeout=10, what="the worker's warm run in /metrics")
    assert seen["predcache_warmed_instances_total[('model', 'metrics-warmed')]"] == 12
    assert seen["predcache_backend_calls_total[('model', 'metrics-warmed')]"] == 2
    assert seen["predcache_warm_runs_total[('model', 'metrics-warmed'), ('status', 'finished')]"] == 1
    # A warm is no client's request.
    assert seen.get("predcache_requests_total[('model', 'metrics-warmed')]", 0) == 0
