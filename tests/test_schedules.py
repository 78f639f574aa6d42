"""Schedules kept in the database (django-celery-beat) in step with policies, and run by a real beat."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from caching.models import CachePolicy, ModelEndpoint, PurgeRecord
from caching.services import model_upsert
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db


def _task(name: str) -> PeriodicTask | None:
    return PeriodicTask.objects.filter(name=name).select_related("crontab", "interval").first()


def test_a_purge_cron_becomes_a_periodic_task_and_follows_the_policy(http_model):
    model_upsert(name="echo", purge_schedule="30 2 * * 1")
    task = _task(f"predcache:purge:m{http_model.pk}")
    assert task is not None and task.task == "predcache.purge_model"
    assert json.loads(task.args) == [http_model.pk]
    crontab = task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_week, str(crontab.timezone)) == (
        "30",
        "2",
        "1",
        "UTC",
    )

    model_upsert(name="echo", purge_schedule="0 4 * * *")
    assert _task(f"predcache:purge:m{http_model.pk}").crontab.hour == "4"

    model_upsert(name="echo", purge_schedule="")
    assert _task(f"predcache:purge:m{http_model.pk}") is None


def test_refresh_ahead_runs_a_few_times_per_window(http_model):
    model_upsert(name="echo", refresh_ahead_seconds=600)
    task = _task(f"predcache:refresh-ahead:m{http_model.pk}")
    assert task is not None and task.task == "predcache.refresh_ahead"
    assert (task.interval.every, task.interval.period) == (150, "seconds")
    model_upsert(name="echo", refresh_ahead_seconds=0)
    assert _task(f"predcache:refresh-ahead:m{http_model.pk}") is None


def test_a_deleted_model_takes_its_schedules_with_it(http_model):
    model_upsert(name="echo", purge_schedule="0 3 * * *", refresh_ahead_seconds=60)
    http_model.delete()
    assert not PeriodicTask.objects.filter(name__startswith="predcache:").exclude(
        name="predcache:reclaim:all"
    )


def test_an_admin_edit_of_the_policy_changes_the_schedule(admin_client, http_model):
    response = admin_client.post(
        f"/admin/caching/modelendpoint/{http_model.pk}/change/", _change_form(http_model, "15 1 * * *")
    )
    assert response.status_code == 302, response.content[:3000]
    assert _task(f"predcache:purge:m{http_model.pk}").crontab.minute == "15"


def test_schedules_install_is_idempotent_and_removes_orphans(http_model, capsys):
    model_upsert(name="echo", purge_schedule="0 3 * * *")
    PeriodicTask.objects.filter(name=f"predcache:purge:m{http_model.pk}").delete()  # lost by hand
    orphan = {"task": "predcache.purge_model", "args": "[999999]", "interval": _any_interval()}
    PeriodicTask.objects.create(name="predcache:purge:m999999", **orphan)  # its model is gone

    call_command("predcache", "schedules", "install")
    out = capsys.readouterr().out
    assert f"created predcache:purge:m{http_model.pk}" in out
    assert "created predcache:reclaim:all" in out
    assert "deleted predcache:purge:m999999" in out

    call_command("predcache", "schedules", "install")
    assert capsys.readouterr().out.strip() == "schedules installed (0 changed)"
    call_command("predcache", "schedules", "list")
    listed = capsys.readouterr().out
    assert f"predcache:purge:m{http_model.pk}" in listed and "0 3 * * *" in listed


def _any_interval():
    from django_celery_beat.models import IntervalSchedule

    return IntervalSchedule.objects.get_or_create(every=60, period=IntervalSchedule.SECONDS)[0]


# --- a running beat (DatabaseScheduler) picks the schedules up -------------------------------------


def _last_run_long_ago(name: str) -> None:
    """As if the task had last run two days ago, WITHOUT telling beat (a bulk update sends no
    signal): only the edit that follows can make a running beat read it again. (Were beat to
    miss it, the every-minute schedule would still run within a minute: the waits allow 90 s.)"""
    PeriodicTask.objects.filter(name=name).update(last_run_at=timezone.now() - timedelta(days=2))


@pytest.mark.django_db(transaction=True)
def test_the_purge_cron_purges_through_the_running_beat(on_worker, api, backend):
    model, _ = model_upsert(
        name="nightly", backend="http", target=backend.predict_url, purge_schedule="0 0 1 1 *"
    )
    api.predict("nightly", {"instances": [[1]]})
    assert api.predict("nightly", {"instances": [[1]]})["X-Cache"] == "HIT"
    _last_run_long_ago(f"predcache:purge:m{model.pk}")

    model_upsert(name="nightly", purge_schedule="* * * * *")  # the edit tells beat; now due

    wait_until(
        lambda: PurgeRecord.objects.filter(model=model).exists(), timeout=90, what="the scheduled purge"
    )
    assert PurgeRecord.objects.get(model=model).requested_by == "schedule"
    assert api.predict("nightly", {"instances": [[1]]})["X-Cache"] == "MISS"
    assert "predcache.purge_model" in on_worker.log_text()


@pytest.mark.django_db(transaction=True)
def test_a_warm_set_scheduled_from_the_cli_is_run_by_the_running_beat(on_worker, api, backend, tmp_path):
    from caching.models import WarmRun, WarmSet

    model, _ = model_upsert(name="scheduled", backend="http", target=backend.predict_url)
    instances = tmp_path / "top.jsonl"
    instances.write_text("".join(f"[{number}]\n" for number in range(20)))
    # Created from the CLI, every 10 s: beat finds it by itself and runs it 10 s later.
    call_command("predcache", "warmset", "add", "scheduled", "top", "--file", str(instances), "--every", "10")
    warm_set = WarmSet.objects.get(model=model, name="top")

    def finished() -> bool:
        return WarmRun.objects.filter(warm_set=warm_set, status="finished").exists()

    wait_until(finished, timeout=60, what="the scheduled warm")
    run = WarmRun.objects.filter(warm_set=warm_set).order_by("queued_at").first()
    assert (run.requested_by, run.total, run.computed) == ("schedule", 20, 20)
    assert api.predict("scheduled", {"instances": [[3], [17]]})["X-Cache"] == "HIT"


@pytest.mark.django_db(transaction=True)
def test_a_purge_schedule_edited_in_the_admin_is_run_by_the_running_beat(on_worker, api, backend, client):
    from django.contrib.auth.models import User

    User.objects.create_superuser("operator", "op@example.com", "a-long-password-1")
    client.login(username="operator", password="a-long-password-1")
    model, _ = model_upsert(
        name="edited", backend="http", target=backend.predict_url, purge_schedule="0 0 1 1 *"
    )
    api.predict("edited", {"instances": [[1]]})
    _last_run_long_ago(f"predcache:purge:m{model.pk}")

    response = client.post(
        f"/admin/caching/modelendpoint/{model.pk}/change/", _change_form(model, "* * * * *")
    )
    assert response.status_code == 302, response.content[:2000]  # the edit tells beat; now due

    wait_until(
        lambda: PurgeRecord.objects.filter(model=model).exists(), timeout=90, what="the edited schedule"
    )
    assert api.predict("edited", {"instances": [[1]]})["X-Cache"] == "MISS"


def _change_form(model: ModelEndpoint, purge_schedule: str) -> dict[str, str]:
    """What the model's admin page posts, with the policy's purge schedule changed."""
    from tests.test_admin import POLICY_DEFAULTS

    policy = CachePolicy.objects.get(model=model)
    return {
        "name": model.name,
        "backend": model.backend,
        "target": model.target,
        "api_endpoint": "",
        "timeout_seconds": str(model.timeout_seconds),
        "model_version": "",
        "options": "{}",
        "policy-TOTAL_FORMS": "1",
        "policy-INITIAL_FORMS": "1",
        "policy-MIN_NUM_FORMS": "1",
        "policy-MAX_NUM_FORMS": "1",
        "policy-0-id": str(policy.pk),
        "policy-0-model": str(model.pk),
        "version_changes-TOTAL_FORMS": "0",
        "version_changes-INITIAL_FORMS": "0",
        **POLICY_DEFAULTS,
        "policy-0-ttl_seconds": str(policy.ttl_seconds),
        "policy-0-purge_schedule": purge_schedule,
    }
