"""Marketplace pages: search with filters and badges, image and entry pages, upload form, keys page."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from marketplace import services
from marketplace.models import Entry, PgpKey
from tests.marketplace.conftest import IMAGE, OTHER_IMAGE, T0

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(owner, registered, entry_for):
    registered(owner, "owner")
    services.entry_upload(raw=entry_for("owner", image=IMAGE, at=T0), uploader=owner)
    services.entry_upload(
        raw=entry_for("owner", image=OTHER_IMAGE, at=T0, title="Debian 12", os="Debian", deprecated="EOL"),
        uploader=owner,
    )


def test_nav_links_to_the_marketplace(client, db):
    assert b'href="/marketplace/"' in client.get("/").content


def test_search_page_lists_valid_images_with_status_badges(client, published):
    html = client.get("/marketplace/").content.decode()
    assert "Ubuntu 24.04 LTS" in html
    assert "Debian 12" not in html  # deprecated: not in the default (valid) search
    assert '<span class="badge valid"' in html
    html = client.get("/marketplace/", {"status": "all"}).content.decode()
    assert "Debian 12" in html and '<span class="badge deprecated"' in html


def test_search_page_filters_by_os_and_shows_bad_values(client, published):
    html = client.get("/marketplace/", {"os": "debian", "status": "deprecated"}).content.decode()
    assert "Debian 12" in html and "Ubuntu 24.04 LTS" not in html
    bad = client.get("/marketplace/", {"status": "bogus"}).content.decode()
    assert "No images match." in bad and "status:" in bad


def test_image_page_shows_each_endorsers_latest_entry(client, published):
    html = client.get(f"/marketplace/images/{OTHER_IMAGE.identifier}/").content.decode()
    assert "creator@example.org" in html
    assert "Deprecated: EOL" in html
    assert '<dd id="current-count">0</dd>' in html


def test_entry_page_shows_the_timeline_and_a_download_link(client, published):
    html = client.get(f"/marketplace/entries/{IMAGE.identifier}/creator@example.org/2024-01-01T12:00:00Z/")
    assert b"Download signed XML" in html.content
    assert b"2024-01-01T12:00:00Z" in html.content


def test_endorser_pages(client, published):
    assert b"creator@example.org" in client.get("/marketplace/endorsers/").content
    html = client.get("/marketplace/endorsers/creator@example.org/").content.decode()
    assert "Debian 12" in html and "Ubuntu 24.04 LTS" in html


def test_upload_form_stores_a_signed_file_and_redirects_to_the_entry(client, owner, registered, entry_for):
    registered(owner, "owner")
    client.force_login(owner)
    document = SimpleUploadedFile("entry.xml", entry_for("owner"), content_type="application/xml")
    response = client.post("/marketplace/upload/", {"document": document})
    assert response.status_code == 302
    assert response["Location"] == f"/marketplace/entries/{IMAGE.identifier}/creator@example.org/2024-01-01T12:00:00Z/"
    assert Entry.objects.get().uploader == owner


def test_upload_form_shows_the_refusal_with_its_rule(client, owner, entry_for):
    client.force_login(owner)
    document = SimpleUploadedFile("entry.xml", entry_for("owner"), content_type="application/xml")
    response = client.post("/marketplace/upload/", {"document": document})
    assert response.status_code == 400
    assert b"(unknown-key)" in response.content
    assert not Entry.objects.exists()


def test_keys_page_registers_lists_and_revokes(client, owner, keyring):
    client.force_login(owner)
    response = client.post("/marketplace/keys/", {"armored": keyring["owner"].armored}, follow=True)
    assert keyring["owner"].fingerprint.encode() in response.content
    assert b"registered" in response.content
    response = client.post(f"/marketplace/keys/{keyring['owner'].fingerprint}/revoke/", follow=True)
    assert b"revoked" in response.content
    assert PgpKey.objects.get().revoked_at is not None


def test_keys_page_shows_why_a_key_is_refused(client, outsider, keyring):
    client.force_login(outsider)
    response = client.post("/marketplace/keys/", {"armored": keyring["owner"].armored})
    assert response.status_code == 400
    assert b"(pgp-key-email)" in response.content
    assert not PgpKey.objects.exists()


def test_search_page_runs_a_fixed_number_of_queries(client, published):
    with CaptureQueriesContext(connection) as queries:
        client.get("/marketplace/", {"status": "all"})
    # The page and its latest entries (a whole first page is its own count); on PostgreSQL first what the planner
    # expects the search to find (two quick queries).
    assert len(queries) == (4 if connection.vendor == "postgresql" else 2)


@pytest.mark.parametrize("page", ["99999999999999999999", "9223372036854775807", "²", "0", "-1", "x"])
def test_a_search_page_number_no_search_can_reach_shows_the_first_page(client, published, page):
    html = client.get("/marketplace/", {"page": page}).content.decode()
    assert "Ubuntu 24.04 LTS" in html


def test_a_search_page_past_the_window_says_to_narrow_the_search(client, published):
    response = client.get("/marketplace/", {"page": "5000"})
    assert response.status_code == 200
    assert "narrow the search to see the others" in response.content.decode()
