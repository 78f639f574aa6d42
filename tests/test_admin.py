"""The Django admin: models with their policy, the purge action and its confirmation, what labels say."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.apps import apps
from django.test import Client

from caching.models import CachePolicy, ModelEndpoint, PurgeRecord

pytestmark = pytest.mark.django_db

# What the admin's policy form posts when left at its defaults.
POLICY_DEFAULTS = {
    "policy-0-mode": "cache",
    "policy-0-ttl_seconds": "3600",
    "policy-0-ttl_jitter": "0",
    "policy-0-stale_while_revalidate_seconds": "0",
    "policy-0-stale_if_error_seconds": "0",
    "policy-0-ignore_fields": "[]",
    "policy-0-admit_after": "1",
    "policy-0-compress_over_bytes": "4096",
    "policy-0-compression": "zlib",
    "policy-0-warm_rate": "50",
    "policy-0-warm_batch_size": "100",
    "policy-0-refresh_ahead_seconds": "0",
}


def test_changelist_shows_models(admin_client, http_model):
    response = admin_client.get("/admin/caching/modelendpoint/")
    assert response.status_code == 200
    assert b"echo" in response.content


def test_add_model_with_its_policy(admin_client, backend):
    response = admin_client.post(
        "/admin/caching/modelendpoint/add/",
        {
            "name": "from-admin",
            "backend": "http",
            "target": backend.predict_url,
            "api_endpoint": "",
            "timeout_seconds": "5",
            "model_version": "",
            "options": "{}",
            "policy-TOTAL_FORMS": "1",
            "policy-INITIAL_FORMS": "0",
            "policy-MIN_NUM_FORMS": "1",
            "policy-MAX_NUM_FORMS": "1",
            **POLICY_DEFAULTS,
            "policy-0-ttl_seconds": "45",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    assert CachePolicy.objects.get(model__name="from-admin").ttl_seconds == 45


def test_admin_refuses_a_model_path_outside_the_model_directory(admin_client):
    response = admin_client.post(
        "/admin/caching/modelendpoint/add/",
        {
            "name": "escape",
            "backend": "local",
            "target": "../../etc/passwd",
            "timeout_seconds": "5",
            "options": "{}",
            "policy-TOTAL_FORMS": "1",
            "policy-INITIAL_FORMS": "0",
            "policy-MIN_NUM_FORMS": "1",
            "policy-MAX_NUM_FORMS": "1",
            "policy-0-ttl_seconds": "45",
        },
    )
    assert response.status_code == 200
    assert b"outside the model directory" in response.content
    assert not ModelEndpoint.objects.filter(name="escape").exists()


def test_the_model_page_shows_the_versions_the_cache_followed(admin_client, api, backend, http_model):
    backend.control(modelVersionId="1", deployedModelId="dm-a")
    api.predict("echo", {"instances": [[1]]})
    backend.control(modelVersionId="2", deployedModelId="dm-b")
    api.predict("echo", {"instances": [[2]]})

    page = admin_client.get(f"/admin/caching/modelendpoint/{http_model.pk}/change/")
    assert page.status_code == 200
    assert b"version changes seen by the cache" in page.content.lower()
    assert b"dm-a/1" in page.content and b"dm-b/2" in page.content

    listing = admin_client.get("/admin/caching/modelendpoint/")
    assert b"dm-b/2" in listing.content
    assert admin_client.get("/admin/caching/modelversionchange/").status_code == 200


class PageText(HTMLParser):
    """The text a reader sees in chosen parts of an admin page, keyed by element id or kind."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.help: dict[str, str] = {}  # help text shown under a form field, by the div's id
        self.labels: list[str] = []
        self.headings: list[str] = []
        self.links: dict[str, str] = {}  # link text -> href
        self._open: list[tuple[str, str, list[str]]] = []  # (tag, what, text parts) being read
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "div" and "help" in (attributes.get("class") or "").split() and attributes.get("id"):
            self._open.append((tag, f"help:{attributes['id']}", []))
        elif tag == "label":
            self._open.append((tag, "label", []))
        elif tag in ("h1", "h2", "h3"):
            self._open.append((tag, "heading", []))
        elif tag == "a" and attributes.get("href"):
            self._open.append((tag, f"link:{attributes['href']}", []))

    def handle_data(self, data: str) -> None:
        for _, _, parts in self._open:
            parts.append(data)

    def handle_endtag(self, tag: str) -> None:
        if not self._open or self._open[-1][0] != tag:
            return
        _, what, parts = self._open.pop()
        text = " ".join("".join(parts).split())
        if what.startswith("help:"):
            self.help[what.removeprefix("help:")] = text
        elif what == "label":
            self.labels.append(text)
        elif what == "heading":
            self.headings.append(text)
        else:
            self.links[text] = what.removeprefix("link:")


def page_text(response) -> PageText:
    assert response.status_code == 200, response.content[:2000]
    return PageText(response.content.decode())


# --- help texts and labels ------------------------------------------------------------------


def test_no_help_text_holds_html_markup():
    # The admin renders help texts as HTML (Django marks them safe), so "<name>" would vanish.
    for model in apps.get_app_config("caching").get_models():
        for field in model._meta.get_fields():
            help_text = str(getattr(field, "help_text", "") or "")
            assert not re.search(r"[<>&]", help_text), f"{model.__name__}.{field.name}: {help_text!r}"


def test_the_model_form_shows_every_help_text_as_written(admin_client, http_model):
    for path in (
        "/admin/caching/modelendpoint/add/",
        f"/admin/caching/modelendpoint/{http_model.pk}/change/",
    ):
        shown = page_text(admin_client.get(path)).help
        expected = {
            f"id_{field.name}_helptext": field.help_text
            for field in ModelEndpoint._meta.fields
            if field.help_text and field.editable
        } | {
            f"id_policy-0-{field.name}_helptext": field.help_text
            for field in CachePolicy._meta.fields
            if field.help_text and field.editable
        }
        assert {key: shown.get(key) for key in expected} == expected
    assert shown["id_name_helptext"] == "Clients call POST /v1/models/NAME:predict with this name as NAME."


def test_labels_use_the_words_an_operator_uses(admin_client, http_model):
    page = page_text(admin_client.get(f"/admin/caching/modelendpoint/{http_model.pk}/change/"))
    for label in (
        "API endpoint:",
        "Timeout (seconds):",
        "TTL (seconds):",
        "TTL jitter:",
        "Stale-while-revalidate (seconds):",
        "Stale-if-error (seconds):",
        "Round to decimal places:",
        "Store after (requests):",
        "Largest stored prediction (bytes):",
        "Max age (seconds):",
        "Purge schedule (cron):",
        "Updated:",
    ):
        assert label in page.labels
    assert not [label for label in page.labels if label.startswith(("Ttl", "Api "))], page.labels
    # One policy per model: its section is headed "Cache policy", with no "cache policy of echo" title.
    assert "Cache policy" in page.headings
    assert not [heading for heading in page.headings if "cache policy of" in heading.lower()], page.headings
    add_page = page_text(admin_client.get("/admin/caching/modelendpoint/add/"))
    assert "Cache policy" in add_page.headings and "#1" not in add_page.headings


def test_changelist_columns_are_short_with_the_full_value_as_a_tooltip(admin_client, http_model):
    target = "projects/predcache-prod-483920/locations/europe-west4/endpoints/8246097531246813579"
    ModelEndpoint.objects.create(name="recsys", backend="vertex", target=target)
    page = admin_client.get("/admin/caching/modelendpoint/").content.decode()
    headers = PageText(page)
    assert {"Backend", "Target", "TTL (s)", "Updated"} <= {link for link in headers.links}
    assert '<span title="Google Vertex AI endpoint">vertex</span>' in page
    assert '<span title="HTTP JSON prediction server">http</span>' in page
    shown = re.search(rf'<span class="target" title="{target}">([^<]+)</span>', page)
    assert shown is not None
    assert len(shown.group(1)) < len(target) and shown.group(1).startswith("projects/")
    assert shown.group(1).endswith("8246097531246813579")


# --- the purge action: a confirmation page first -------------------------------------------


def choose_purge(client: Client, *models: ModelEndpoint, query: str = ""):
    """What the changelist's action form posts when "Purge" is chosen for ``models``."""
    return client.post(
        f"/admin/caching/modelendpoint/{query}",
        {"action": "purge_cache", "index": "0", "_selected_action": [model.pk for model in models]},
    )


def confirm_purge(client: Client, *models: ModelEndpoint, **extra):
    """What the confirmation page's form posts."""
    return client.post(
        "/admin/caching/modelendpoint/",
        {"action": "purge_cache", "post": "yes", "_selected_action": [model.pk for model in models]},
        **extra,
    )


@pytest.fixture
def cached(api, backend, http_model):
    """One entry of the echo model in the cache (served as a HIT)."""
    api.predict("echo", {"instances": [[1]]})
    assert api.predict("echo", {"instances": [[1]]})["X-Cache"] == "HIT"
    return lambda: api.predict("echo", {"instances": [[1]]})["X-Cache"]


def test_choosing_purge_shows_what_will_be_purged_and_purges_nothing(admin_client, cached, http_model):
    other = ModelEndpoint.objects.create(
        name="recsys", backend="vertex", target="projects/p/locations/l/endpoints/1"
    )
    response = choose_purge(admin_client, http_model, other)
    page = page_text(response)
    assert "Purge the cached predictions of 2 models?" in page.headings
    content = response.content.decode()
    for text in ("echo", "recsys", "never purged", "A purge cannot be undone", "Yes, purge them"):
        assert text in content
    assert '<span title="Google Vertex AI endpoint">vertex</span>' in content
    assert "csrfmiddlewaretoken" in content
    assert PurgeRecord.objects.count() == 0
    assert cached() == "HIT"


def test_the_confirmation_lists_earlier_purges(admin_client, http_model):
    from caching.services import model_cache_purge

    model_cache_purge(model=http_model, requested_by="cron", reclaim=False)
    page = page_text(choose_purge(admin_client, http_model))
    assert "Purge the cached predictions of 1 model?" in page.headings
    assert page.links["1 purge"] == f"/admin/caching/purgerecord/?model__id__exact={http_model.pk}"


def test_confirming_purges_the_selected_models(admin_client, admin_user, cached, http_model):
    response = confirm_purge(admin_client, http_model, follow=True)
    assert b"Purged the cached predictions of 1 model: echo." in response.content
    assert response.redirect_chain[-1][0] == "/admin/caching/modelendpoint/"
    record = PurgeRecord.objects.get()
    assert (record.model, record.scope, record.requested_by) == (http_model, "model", admin_user.username)
    assert cached() == "MISS"


def test_cancel_goes_back_to_the_filtered_list_and_purges_nothing(admin_client, cached, http_model):
    page = page_text(choose_purge(admin_client, http_model, query="?backend__exact=http"))
    back = page.links["No, take me back"]
    assert back == "/admin/caching/modelendpoint/?backend__exact=http"
    assert b"echo" in admin_client.get(back).content
    assert PurgeRecord.objects.count() == 0
    assert cached() == "HIT"


def test_purging_needs_the_change_permission(client, django_user_model, cached, http_model):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="viewer-password", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_modelendpoint"))
    client.force_login(viewer)
    assert b"purge_cache" not in client.get("/admin/caching/modelendpoint/").content
    assert b"Purge the cached" not in choose_purge(client, http_model).content
    # Without the change permission the list offers no action, so a forged confirmation is ignored.
    response = confirm_purge(client, http_model, follow=True)
    assert response.status_code == 200 and b"Purged" not in response.content
    assert PurgeRecord.objects.count() == 0
    assert cached() == "HIT"


def test_the_confirmation_needs_its_csrf_token(admin_user, cached, http_model):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert confirm_purge(client, http_model).status_code == 403
    assert PurgeRecord.objects.count() == 0
    assert cached() == "HIT"
