"""The issue's "must show", end to end through the API with a token, as a creator's script would do it."""

from __future__ import annotations

import datetime as dt

import pytest
from knox.models import AuthToken

from marketplace import metadata

pytestmark = pytest.mark.django_db


def test_creator_publishes_finds_and_deprecates_an_image(owner, keyring, api, tmp_path):
    key = keyring["owner"]
    _token_row, token = AuthToken.objects.create(owner)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    # 1. Register the OpenPGP key.
    response = api.post("/api/v1/accounts/pgp-keys/", {"armored": key.armored}, format="json")
    assert response.status_code == 201, response.json()

    # 2. Build an entry for an image file and sign it with gpg.
    image = tmp_path / "rocky-9.img"
    image.write_bytes(b"\x00" * 4096 + b"rocky linux 9 root filesystem")
    fields = {
        "type": "base",
        "title": "Rocky Linux 9",
        "os": "Rocky",
        "os_version": "9",
        "os_arch": "x86_64",
        "format": "raw",
        "locations": ("https://images.example.org/rocky-9.img",),
    }
    first_signed_at = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
    signed = key.sign(metadata.build_for_file(image, **fields), now=first_signed_at)

    # 3. Upload it.
    response = api.post("/api/v1/marketplace/entries/", data=signed, content_type="application/xml")
    assert response.status_code == 201, response.json()
    identifier = response.json()["identifier"]
    assert response.json()["bytes"] == image.stat().st_size
    assert api.get(response["Location"], {"format": "xml"}).content == signed

    # 4. Anyone finds it by OS and by endorser.
    api.credentials()
    by_os = api.get("/api/v1/marketplace/images/", {"os": "rocky"}).json()
    assert [i["identifier"] for i in by_os["results"]] == [identifier]
    by_endorser = api.get("/api/v1/marketplace/images/", {"endorser": "creator@example.org"}).json()
    assert [i["identifier"] for i in by_endorser["results"]] == [identifier]
    assert by_os["results"][0]["endorsements"][0]["status"] == "valid"

    # 5. Deprecate it with a reason: a newer signed entry carrying slterms:deprecated.
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    deprecation = key.sign(
        metadata.build_for_file(image, **fields, deprecated="Replaced by Rocky 9.4: CVE-2024-6387 in sshd"),
        now=first_signed_at + dt.timedelta(days=30),
    )
    response = api.post("/api/v1/marketplace/entries/", data=deprecation, content_type="application/xml")
    assert response.status_code == 201, response.json()

    # 6. The status has changed: gone from the default (valid) search, found as deprecated, with the reason.
    api.credentials()
    assert api.get("/api/v1/marketplace/images/", {"os": "rocky"}).json()["results"] == []
    deprecated = api.get("/api/v1/marketplace/images/", {"os": "rocky", "status": "deprecated"}).json()
    (entry,) = deprecated["results"][0]["endorsements"]
    assert entry["status"] == "deprecated"
    assert entry["deprecated_reason"] == "Replaced by Rocky 9.4: CVE-2024-6387 in sshd"
    detail = api.get(f"/api/v1/marketplace/images/{identifier}/").json()
    assert detail["current_endorsements"] == 0
    history = api.get("/api/v1/marketplace/endorsers/creator@example.org/").json()["results"]
    assert [(h["status"], h["is_latest"]) for h in history] == [("deprecated", True), ("valid", False)]
