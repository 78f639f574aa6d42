"""The admin's dashboard pages: staff only, what they show, and what they cost with 200 models."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext

from caching.runtime import get_runtime

pytestmark = pytest.mark.django_db


def test_a_model_page_measures_its_entries_and_memory(admin_client, api, http_model) -> None:
    for number in range(5):
        assert api.predict("echo", {"instances": [{"n": number}]})["X-Cache"] == "MISS"
    page = admin_client.get("/admin/dashboard/echo/")
    assert page.status_code == 200
    usage = page.context["figures"].usage
    assert (usage.entries, usage.complete, usage.sampled) == (5, True, 5)
    assert usage.estimated_bytes > 5 * 40  # each entry: its key, header and JSON, with Redis's overhead
    runtime = get_runtime()
    stored = runtime.client.hgetall(runtime.keyspace.usage(runtime.keyspace.namespace(http_model.pk)))
    assert int(stored[b"entries"]) == 5
    overview = admin_client.get("/admin/dashboard/")
    row = next(row for row in overview.context["models"] if row.name == "echo")
    assert row.usage == usage  # the overview reads the stored measurement, never scans


def test_a_model_being_measured_by_another_page_is_not_scanned_twice(admin_client, api, http_model) -> None:
    from caching.services.jobs import model_job_lock

    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "MISS"
    runtime = get_runtime()
    usage_key = runtime.keyspace.usage(runtime.keyspace.namespace(http_model.pk))
    with model_job_lock(model=http_model, job="usage", seconds=60) as measuring:
        assert measuring
        page = admin_client.get("/admin/dashboard/echo/")
        assert page.status_code == 200
        assert page.context["figures"].usage is None  # nothing measured yet, and none measured now
        assert not runtime.client.exists(usage_key)
    page = admin_client.get("/admin/dashboard/echo/")  # the other measurement is done: this one may
    assert page.context["figures"].usage.entries == 1


def series_of(page: Any) -> dict[str, Any]:
    found = re.search(
        rb'<script id="dashboard-series" type="application/json">(.*?)</script>', page.content, re.S
    )
    assert found, "no chart data on the page"
    return json.loads(found.group(1))


def test_the_model_page_charts_what_clients_asked(admin_client, api, backend, http_model) -> None:
    documents = [{"instances": [{"n": number}]} for number in range(3)]
    for document in documents:
        assert api.predict("echo", document)["X-Cache"] == "MISS"
    for document in documents + documents:
        assert api.predict("echo", document)["X-Cache"] == "HIT"
    runtime = get_runtime()
    runtime.stats.flush(runtime.client, runtime.keyspace)

    page = admin_client.get("/admin/dashboard/echo/?hours=1")
    series = series_of(page)
    assert len(series["labels"]) == 60
    assert (sum(series["requests"]), sum(series["hits"]), sum(series["misses"])) == (9, 6, 3)
    assert sum(series["backend_calls"]) == 3 == len(backend.calls())
    active = [index for index, requests in enumerate(series["requests"]) if requests]
    assert active and all(series["hit_ratio"][index] is not None for index in active)
    assert all(series["hit_ratio"][index] is None for index in range(60) if index not in active)
    assert all(series["miss_ms"][index] > 0 for index in active if series["misses"][index])
    assert sum(series["seconds_saved"]) > 0
    text = page.content.decode()
    assert "67%" in text  # 6 of 9 instances looked up were hits
    overview = series_of(admin_client.get("/admin/dashboard/?hours=1"))
    assert (sum(overview["requests"]), sum(overview["hits"])) == (9, 6)
    assert overview["seconds_saved"] is None  # models' backend times are not summed into one figure


def test_the_dashboard_is_for_staff_with_the_view_permission(client, django_user_model, http_model) -> None:
    assert client.get("/admin/dashboard/").status_code == 302  # to the login page
    django_user_model.objects.create_user("clerk", password="pw", is_staff=True)
    client.login(username="clerk", password="pw")
    assert client.get("/admin/dashboard/").status_code == 403
    assert b'href="/admin/dashboard/"' not in client.get("/admin/").content  # no link to a 403
    assert client.get("/admin/dashboard/echo/").status_code == 403


def test_the_admin_index_links_to_the_dashboard(admin_client) -> None:
    assert b'href="/admin/dashboard/"' in admin_client.get("/admin/").content
    assert admin_client.get("/admin/dashboard/no-such-model/").status_code == 404


class RoundTrips:
    """Commands sent to Redis one at a time, and pipelines sent whole: each is one round trip."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.commands = 0
        original_command = redis.client.Redis.execute_command
        original_execute = redis.client.Pipeline.execute

        def command(client: Any, *args: Any, **options: Any) -> Any:
            self.count += 1
            self.commands += 1
            return original_command(client, *args, **options)

        def execute(pipe: Any, *args: Any, **options: Any) -> Any:
            self.count += 1
            self.commands += len(pipe)
            return original_execute(pipe, *args, **options)

        monkeypatch.setattr(redis.client.Redis, "execute_command", command)
        monkeypatch.setattr(redis.client.Pipeline, "execute", execute)


def overview_cost(admin_client: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int, int, Any]:
    admin_client.get("/admin/dashboard/")  # the session and the runtime are in place
    with monkeypatch.context() as patch:
        trips = RoundTrips(patch)
        with CaptureQueriesContext(connection) as queries:
            page = admin_client.get("/admin/dashboard/?hours=24")
    assert page.status_code == 200
    return len(queries), trips.count, trips.commands, page


def test_the_overview_of_200_models_costs_what_one_model_costs(
    admin_client, api, backend, monkeypatch
) -> None:
    from caching.models import ModelEndpoint, ModelVersionChange, PurgeRecord
    from caching.services import model_upsert

    model_upsert(name="m000", backend="http", target=backend.predict_url)
    one_queries, one_trips, one_commands, _ = overview_cost(admin_client, monkeypatch)

    ModelEndpoint.objects.bulk_create(
        ModelEndpoint(name=f"m{number:03}", backend="http", target=backend.predict_url)
        for number in range(1, 200)
    )
    models = list(ModelEndpoint.objects.all())
    ModelVersionChange.objects.bulk_create(ModelVersionChange(model=model, version="d/1") for model in models)
    PurgeRecord.objects.bulk_create(
        PurgeRecord(model=model, scope="model", requested_by="t") for model in models
    )
    assert api.predict("m150", {"instances": [1]})["X-Cache"] == "MISS"
    runtime = get_runtime()
    runtime.stats.flush(runtime.client, runtime.keyspace)

    queries, trips, commands, page = overview_cost(admin_client, monkeypatch)
    assert len(page.context["models"]) == 200
    assert page.context["models"][150].counters["requests"] == 1
    assert page.content.count(b'href="/admin/dashboard/m') == 200
    assert queries == one_queries, "the overview's queries grow with the number of models"
    assert trips == one_trips == 1, "the overview's Redis reads are not one pipeline"
    # One round trip, whose commands grow by three a model (counters, usage, breakers).
    assert commands - one_commands == 3 * 199


def test_an_open_breaker_shows_with_the_process_that_reported_it(admin_client, http_model) -> None:
    runtime = get_runtime()
    breaker = runtime.cache.backend_breakers.get(runtime.keyspace.namespace(http_model.pk))
    for _ in range(breaker.failure_threshold):
        breaker.failure()
    runtime.stats.flush(runtime.client, runtime.keyspace)
    page = admin_client.get("/admin/dashboard/")
    (row,) = page.context["models"]
    assert [(report.state, f":{os.getpid()}:" in report.process) for report in row.breakers] == [
        ("open", True)
    ]
    assert b'class="breaker breaker-open"' in page.content

    breaker.success()
    runtime.stats.flush(runtime.client, runtime.keyspace)
    assert admin_client.get("/admin/dashboard/echo/").context["figures"].breakers == []


def test_without_redis_the_pages_say_so(admin_client, http_model, settings) -> None:
    from tests.support.processes import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    for path in ("/admin/dashboard/", "/admin/dashboard/echo/"):
        page = admin_client.get(path)
        assert page.status_code == 200
        assert b"Redis is unavailable" in page.content


def test_the_overview_shows_a_lower_bound_as_one(admin_client, http_model) -> None:
    import time

    from caching.core.usage import CacheUsage, save_usage

    runtime = get_runtime()
    cut = CacheUsage(
        entries=12, complete=False, sampled=4, sampled_bytes=4000, measured_at=time.time(), seconds=0.5
    )
    save_usage(
        runtime.client, runtime.keyspace, runtime.keyspace.namespace(http_model.pk), cut, keep_seconds=60
    )
    row = admin_client.get("/admin/dashboard/").content.decode()
    assert "≥ 12" in row and "≥ 11.7\xa0KB" in row
