"""The admin in a real browser: headless Chromium against gunicorn, as an operator at 1366x768 sees it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ModelServer
from tests.support.browser import PageWatch, chromium, screenshot
from tests.support.gunicorn_server import (
    GunicornServer,
    environment_serving_the_test_database,
    gunicorn_server,
)
from tests.support.processes import REPO

# The server reads what the tests commit: no test transaction (tables are flushed after each test).
pytestmark = pytest.mark.django_db(transaction=True)

VIEWPORT = {"width": 1366, "height": 768}
PASSWORD = "operator-password-for-tests"
LONG_HTTP_TARGETS = {
    "fraud-scoring-eu": "http://fraud-scoring.ml-serving.internal.example:8501/v1/models/fraud-scoring-eu-west-gbdt-2026-11:predict",
    "churn-risk": "http://churn.ml-serving.internal.example:8080/serving/v2/models/churn-risk-xgboost/versions/17/infer",
}
VERTEX_MODEL = (
    "recsys-vertex",
    "projects/predcache-prod-483920/locations/europe-west4/endpoints/8246097531246813579",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as running:
        yield running


@pytest.fixture(scope="module")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The static files collected as a deployment collects them (the server runs with DEBUG off)."""
    root = tmp_path_factory.mktemp("static")
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=REPO,
        env={**os.environ, "DJANGO_STATIC_ROOT": str(root), "PYTHONPATH": str(REPO)},
        check=True,
    )
    return root


@pytest.fixture(scope="module")
def server(
    django_db_setup: None,
    django_db_blocker: Any,
    redis_url: str,
    static_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GunicornServer]:
    environment = {
        **environment_serving_the_test_database(django_db_blocker, redis_url, name="browser"),
        "DJANGO_STATIC_ROOT": str(static_root),
        "WEB_CONCURRENCY": "1",
    }
    with gunicorn_server(tmp_path_factory.mktemp("admin-browser"), environment=environment) as running:
        yield running


@dataclass(frozen=True)
class Seeded:
    username: str
    api_key: str
    names: list[str]


@pytest.fixture
def seeded(transactional_db: None, backend: ModelServer) -> Seeded:
    """A staff operator (view/change on models and policies), four models and an API key, committed."""
    from django.contrib.auth.models import Permission, User

    from caching.services import api_key_create, model_upsert

    operator = User.objects.create_user("operator", password=PASSWORD, is_staff=True)
    operator.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="caching",
            codename__in=["view_modelendpoint", "change_modelendpoint", "change_cachepolicy"],
        )
    )
    model_upsert(name="echo", backend="http", target=backend.predict_url, ttl_seconds=300)
    for name, target in LONG_HTTP_TARGETS.items():
        model_upsert(name=name, backend="http", target=target, ttl_seconds=86400, model_version="2026-11")
    model_upsert(name=VERTEX_MODEL[0], backend="vertex", target=VERTEX_MODEL[1], ttl_seconds=600)
    names = ["echo", *LONG_HTTP_TARGETS, VERTEX_MODEL[0]]
    return Seeded(operator.username, api_key_create(label="browser"), sorted(names))


@pytest.fixture
def page(browser: Any, server: GunicornServer, seeded: Seeded) -> Iterator[tuple[Any, PageWatch]]:
    """A fresh browser context at 1366x768, logged in to the admin through its login form."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport=VIEWPORT, base_url=f"http://127.0.0.1:{server.port}")
    watch = PageWatch()
    page = watch.attach(context.new_page())
    try:
        page.goto("/admin/login/?next=/admin/caching/modelendpoint/")
        page.fill("#id_username", seeded.username)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        expect(page.locator("#changelist")).to_be_visible()
        page.wait_for_load_state("load")  # stylesheets too: the tests measure the layout
        yield page, watch
    finally:
        context.close()


def assert_quiet(watch: PageWatch) -> None:
    assert watch.errors == [], f"the browser console reported errors: {watch.errors}"
    assert watch.off_machine() == [], "the admin made requests that leave 127.0.0.1"
    assert watch.requests, "no request was recorded at all"


def line_count(page: Any, selector: str) -> list[list[Any]]:
    """For each element matching ``selector``: [its text, how many lines it is laid out on]."""
    return page.eval_on_selector_all(
        selector,
        """cells => cells.map(cell => {
            const range = document.createRange();
            range.selectNodeContents(cell);
            const boxes = [...range.getClientRects()].filter(box => box.width > 0);
            const tops = new Set(boxes.map(box => Math.round(box.top)));
            return [cell.innerText.trim(), tops.size];
        })""",
    )


def test_model_changelist_fits_a_1366_pixel_screen(page: tuple[Any, PageWatch], seeded: Seeded) -> None:
    browser_page, watch = page
    screenshot(browser_page, "admin-model-changelist-1366")
    rows = browser_page.locator("#result_list tbody tr")
    assert rows.count() == len(seeded.names)

    width = VIEWPORT["width"]
    # The table scrolls sideways inside its own box when too wide: a cell must lie within that
    # box, not only within the window, to be seen.
    visible = browser_page.locator("#changelist-form .results").bounding_box()
    assert visible is not None and visible["x"] >= 0 and visible["x"] + visible["width"] <= width
    for selector in ("th.column-ttl", "th.column-updated", "td.field-ttl", "td.field-updated"):
        cells = browser_page.locator(selector).all()
        assert cells, f"no {selector} on the page"
        for box in [cell.bounding_box() for cell in cells]:
            assert box is not None and box["x"] >= visible["x"], f"{selector} starts off-screen: {box}"
            assert box["x"] + box["width"] <= visible["x"] + visible["width"], (
                f"{selector} ends past the visible list ({visible}): {box}"
            )
    assert browser_page.evaluate("document.documentElement.scrollWidth") <= width, "the page scrolls sideways"
    assert browser_page.eval_on_selector(
        "#changelist-form .results", "box => box.scrollWidth <= box.clientWidth"
    ), "the model list scrolls sideways"

    backends = line_count(browser_page, "td.field-backend_kind")
    assert sorted(backends) == [["http", 1]] * 3 + [["vertex", 1]], backends
    targets = line_count(browser_page, "td.field-short_target")
    assert all(lines == 1 for _, lines in targets), targets
    # A long target is shortened in the cell; the full one is its tooltip.
    long_target = LONG_HTTP_TARGETS["fraud-scoring-eu"]
    cell = browser_page.locator("tr", has_text="fraud-scoring-eu").locator("td.field-short_target [title]")
    assert cell.get_attribute("title") == long_target
    assert len(cell.inner_text()) < len(long_target)
    assert_quiet(watch)


def test_purge_action_asks_first_then_purges(
    page: tuple[Any, PageWatch], seeded: Seeded, server: GunicornServer
) -> None:
    from playwright.sync_api import expect

    from caching.models import PurgeRecord

    browser_page, watch = page
    document = {"instances": [{"id": uuid.uuid4().hex}]}
    assert server.predict("echo", seeded.api_key, document).headers["X-Cache"] == "MISS"
    assert server.predict("echo", seeded.api_key, document).headers["X-Cache"] == "HIT"

    chosen = ["echo", VERTEX_MODEL[0]]
    for name in chosen:
        browser_page.locator("#result_list tr", has_text=name).locator("input.action-select").check()
    browser_page.select_option("select[name=action]", "purge_cache")
    browser_page.click("button[name=index]")

    confirmation = browser_page.locator("#content")
    expect(confirmation.locator("h1")).to_have_text("Purge the cached predictions of 2 models?")
    listed = confirmation.locator("table.purge-summary tbody tr")
    expect(listed).to_have_count(2)
    expect(listed.nth(0)).to_contain_text("echo")
    expect(listed.nth(0)).to_contain_text("http")
    expect(listed.nth(1)).to_contain_text(VERTEX_MODEL[0])
    expect(listed.nth(1)).to_contain_text("vertex")
    # Asking is not purging: no record yet, and the entry is still served.
    assert PurgeRecord.objects.count() == 0
    assert server.predict("echo", seeded.api_key, document).headers["X-Cache"] == "HIT"
    screenshot(browser_page, "admin-purge-confirmation")

    browser_page.click("input[type=submit][value^='Yes, purge']")
    expect(browser_page.locator("ul.messagelist li.success")).to_have_text(
        f"Purged the cached predictions of {len(chosen)} models: {', '.join(chosen)}."
    )
    assert sorted(PurgeRecord.objects.values_list("model__name", flat=True)) == chosen
    assert set(PurgeRecord.objects.values_list("requested_by", flat=True)) == {seeded.username}
    assert server.predict("echo", seeded.api_key, document).headers["X-Cache"] == "MISS"
    screenshot(browser_page, "admin-purge-done")
    assert_quiet(watch)


def test_model_page_speaks_the_operators_words_and_saves(page: tuple[Any, PageWatch]) -> None:
    from playwright.sync_api import expect

    from caching.models import CachePolicy

    browser_page, watch = page
    browser_page.click("#result_list a:text-is('echo')")
    form = browser_page.locator("#modelendpoint_form")
    expect(form.locator("h2", has_text="Cache policy")).to_be_visible()
    expect(form).not_to_contain_text("cache policy of")
    expect(browser_page.locator("#id_name_helptext")).to_have_text(
        "Clients call POST /v1/models/NAME:predict with this name as NAME."
    )
    for label in ("API endpoint:", "Timeout (seconds):", "TTL (seconds):", "Stale-if-error (seconds):"):
        expect(form.locator("label", has_text=label)).to_be_visible()
    screenshot(browser_page, "admin-model-change", full_page=True)

    # The policy section's markup is ours: the browser's own form post must still save it.
    browser_page.fill("#id_policy-0-ttl_seconds", "120")
    browser_page.click("input[name=_save]")
    expect(browser_page.locator("ul.messagelist li.success")).to_contain_text("was changed successfully")
    assert CachePolicy.objects.get(model__name="echo").ttl_seconds == 120
    assert_quiet(watch)
