"""A signed entry's bytes are handed out as a download that no browser runs, whatever the entry holds.

The attack: an XHTML ``script`` element kept as an extension in a signed entry, served inline as
``application/xml``, ran in the portal's origin for whoever opened the entry."""

from __future__ import annotations

import pytest

from tests.marketplace.conftest import IMAGE, T0, unsigned_entry

pytestmark = pytest.mark.django_db

ENTRY = f"/api/v1/marketplace/entries/{IMAGE.identifier}/creator@example.org/2024-01-01T12:00:00Z/"
PAGE_DOWNLOAD = f"/marketplace/entries/{IMAGE.identifier}/creator@example.org/2024-01-01T12:00:00Z/signed.xml"
SCRIPT = (
    b'<html:script xmlns:html="http://www.w3.org/1999/xhtml">'
    b"fetch('/api/v1/accounts/tokens/', {method: 'POST'})</html:script>"
)
FILENAME = f'attachment; filename="{IMAGE.identifier}-2024-01-01T120000Z.xml"'


@pytest.fixture
def hostile_entry(owner, registered, keyring, api_as) -> bytes:
    """A signed entry carrying an XHTML script element as an extension, uploaded and accepted."""
    registered(owner, "owner")
    unsigned = unsigned_entry().replace(b"  </rdf:Description>", b"    " + SCRIPT + b"\n  </rdf:Description>")
    raw = keyring["owner"].sign(unsigned, now=T0)
    response = api_as(owner).post("/api/v1/marketplace/entries/", data=raw, content_type="application/xml")
    assert response.status_code == 201, response.json()
    return raw


def assert_served_as_a_sandboxed_download(response, raw: bytes) -> None:
    assert response.status_code == 200
    assert response.content == raw  # the signed bytes, unchanged
    assert response["Content-Disposition"] == FILENAME
    assert response["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_the_api_serves_an_entry_with_a_script_as_a_sandboxed_download_with_format_xml(hostile_entry, client):
    response = client.get(ENTRY, {"format": "xml"})
    assert response["Content-Type"] == "application/xml"
    assert_served_as_a_sandboxed_download(response, hostile_entry)
    assert SCRIPT in response.content


@pytest.mark.parametrize("accept", ["application/xml", "application/rdf+xml"])
def test_the_api_serves_an_entry_with_a_script_as_a_sandboxed_download_when_xml_is_accepted(
    hostile_entry, client, accept
):
    response = client.get(ENTRY, HTTP_ACCEPT=accept)
    assert response["Content-Type"] == accept
    assert_served_as_a_sandboxed_download(response, hostile_entry)


def test_the_page_download_is_a_sandboxed_download_too(hostile_entry, client):
    assert_served_as_a_sandboxed_download(client.get(PAGE_DOWNLOAD), hostile_entry)


def test_the_entry_as_json_keeps_the_site_policy(hostile_entry, client):
    response = client.get(ENTRY)
    assert response["Content-Type"] == "application/json"
    assert "sandbox" not in response["Content-Security-Policy"]
    assert "Content-Disposition" not in response
