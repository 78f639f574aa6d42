"""The dashboard in a real browser: headless Chromium against gunicorn draws the counters clients caused."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ModelServer
from tests.support.browser import PageWatch, chromium, screenshot
from tests.support.gunicorn_server import (
    GunicornServer,
    environment_serving_the_test_database,
    gunicorn_server,
)
from tests.support.processes import REPO, wait_until

# The server reads what the tests commit: no test transaction (tables are flushed after each test).
pytestmark = pytest.mark.django_db(transaction=True)

VIEWPORT = {"width": 1366, "height": 768}
PASSWORD = "operator-password-for-tests"
CHARTS = ["requests", "hit_ratio", "backend", "latency"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as running:
        yield running


@pytest.fixture(scope="module")
def server_environment(
    django_db_setup: None, django_db_blocker: Any, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    static_root = tmp_path_factory.mktemp("static")  # collected as a deployment does (DEBUG off)
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=REPO,
        env={**os.environ, "DJANGO_STATIC_ROOT": str(static_root), "PYTHONPATH": str(REPO)},
        check=True,
    )
    return {
        **environment_serving_the_test_database(django_db_blocker, redis_url, name="dashboard"),
        "DJANGO_STATIC_ROOT": str(static_root),
        "WEB_CONCURRENCY": "1",
        "PREDCACHE_STATS_FLUSH_SECONDS": "0.2",  # the tests' default is never
    }


@pytest.fixture(scope="module")
def server(
    server_environment: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornServer]:
    with gunicorn_server(tmp_path_factory.mktemp("dashboard"), environment=server_environment) as running:
        yield running


def chart_data(page: Any, chart: str) -> list[dict[str, Any]]:
    """Each dataset the Chart.js instance on canvas[data-chart=chart] holds, with its drawn area."""
    return page.evaluate(
        """name => {
            const chart = Chart.getChart(document.querySelector(`canvas[data-chart="${name}"]`));
            return chart.data.datasets.map(set => ({
                label: set.label, data: set.data, labels: chart.data.labels.length,
                width: chart.chartArea.right - chart.chartArea.left,
                height: chart.chartArea.bottom - chart.chartArea.top,
            }));
        }""",
        chart,
    )


def embedded_series(page: Any) -> dict[str, Any]:
    return page.evaluate("JSON.parse(document.getElementById('dashboard-series').textContent)")


def total(values: list[Any]) -> float:
    return sum(value for value in values if value is not None)


def test_the_dashboard_draws_what_clients_asked(
    browser: Any,
    server: GunicornServer,
    server_environment: dict[str, str],
    backend: ModelServer,
    settings: Any,
    transactional_db: None,
) -> None:
    from django.contrib.auth.models import Permission, User
    from playwright.sync_api import expect

    from caching.models import ModelEndpoint
    from caching.selectors import model_stats
    from caching.services import api_key_create, model_upsert

    operator = User.objects.create_user("operator", password=PASSWORD, is_staff=True)
    operator.user_permissions.set(Permission.objects.filter(codename="view_modelendpoint"))
    model_upsert(name="echo", backend="http", target=backend.predict_url, ttl_seconds=300)
    model_upsert(name="idle", backend="http", target=backend.predict_url, ttl_seconds=300)
    key = api_key_create(label="browser")

    # A scripted workload: 4 instances missed once, then each asked twice more (all hits).
    outcomes = [server.predict("echo", key, {"instances": [{"n": n}]}).headers["X-Cache"] for n in range(4)]
    outcomes += [
        server.predict("echo", key, {"instances": [{"n": n % 4}]}).headers["X-Cache"] for n in range(8)
    ]
    assert outcomes == ["MISS"] * 4 + ["HIT"] * 8
    settings.PREDCACHE_KEY_PREFIX = server_environment["PREDCACHE_KEY_PREFIX"]  # read what the server wrote
    echo = ModelEndpoint.objects.get(name="echo")
    wait_until(lambda: model_stats(model=echo)["requests"] == 12, timeout=15, what="the server's stats flush")

    context = browser.new_context(viewport=VIEWPORT, base_url=f"http://127.0.0.1:{server.port}")
    watch = PageWatch()
    page = watch.attach(context.new_page())
    try:
        page.goto("/admin/login/?next=/admin/")
        page.fill("#id_username", "operator")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.click("a:text-is('Dashboard')")
        expect(page.locator("h1")).to_have_text("Dashboard")
        page.wait_for_function(
            "() => window.Chart && Chart.getChart(document.querySelector('canvas[data-chart=latency]'))"
        )
        served = embedded_series(page)
        for chart in CHARTS:
            for dataset in chart_data(page, chart):
                assert (
                    dataset["labels"] == len(served["labels"])
                    and dataset["width"] > 100 < dataset["height"] + 100
                )
        requests, hits, l1_hits, misses = chart_data(page, "requests")
        assert requests["data"] == served["requests"] and total(requests["data"]) == 12
        assert (total(hits["data"]), total(misses["data"])) == (8, 4)
        assert l1_hits["data"] == served["l1_hits"] and total(l1_hits["data"]) == 0  # echo has no L1
        assert total(chart_data(page, "backend")[0]["data"]) == 4 == len(backend.calls())
        rows = page.locator("#dashboard-models tbody tr")
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_contain_text("echo")
        expect(rows.nth(0)).to_contain_text("67%")  # 8 of 12 instances looked up were hits
        screenshot(page, "dashboard-overview", full_page=True)

        page.click("#dashboard-models a:text-is('echo')")
        expect(page.locator("h1")).to_have_text("Dashboard: echo")
        page.wait_for_function(
            "() => window.Chart && Chart.getChart(document.querySelector('canvas[data-chart=latency]'))"
        )
        served = embedded_series(page)
        (ratio,) = chart_data(page, "hit_ratio")
        assert ratio["data"] == served["hit_ratio"]
        assert [value for value in ratio["data"] if value is not None], "no minute with a hit ratio"
        calls, saved = chart_data(page, "backend")
        assert total(calls["data"]) == 4 and total(saved["data"]) > 0
        hit_ms, miss_ms = chart_data(page, "latency")
        assert hit_ms["data"] == served["hit_ms"] and total(hit_ms["data"]) > 0
        assert miss_ms["data"] == served["miss_ms"] and total(miss_ms["data"]) > 0
        figures = page.locator("#dashboard-figures tbody tr")
        expect(figures).to_contain_text("67%")
        entries = figures.locator("td").nth(6)
        expect(entries).to_have_text("4")  # measured on opening the page: the 4 instances computed
        screenshot(page, "dashboard-model", full_page=True)
    finally:
        context.close()
    assert watch.errors == [], f"the browser console reported errors: {watch.errors}"
    assert watch.off_machine() == [], "the dashboard made requests that leave 127.0.0.1"
    assert any("chart.umd.min.js" in url for url in watch.requests), "Chart.js was not loaded from the app"
