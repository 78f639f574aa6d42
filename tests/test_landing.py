"""The landing page at ``/``: what predcache is, with working links to the admin, docs and probes."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.django_db


def test_the_root_is_a_page_for_people_with_working_links(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "read-through prediction cache" in page
    assert "/v1/models/&lt;model&gt;:predict" in page
    links = set(re.findall(r'href="(/[^"]*)"', page))
    assert {"/admin/", "/v1/docs", "/v1/schema", "/healthz", "/readyz"} <= links
    for link in {link for link in links if not link.startswith(("/admin/", "/static/"))}:
        assert client.get(link).status_code == 200, link
    assert client.get("/admin/").status_code == 302  # to the login page


def test_the_admins_view_site_link_leads_to_it(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert 'href="/"' in page and "View site" in page
    assert admin_client.get("/").status_code == 200


def test_the_root_takes_no_posts(client):
    assert client.post("/").status_code == 405
