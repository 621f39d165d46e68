"""Uploading signed entries through the API: storage, the original bytes, and every refusal."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from core.models import AuditEntry
from marketplace.models import Entry
from tests.marketplace.conftest import IMAGE, T0, unsigned_entry

pytestmark = pytest.mark.django_db

ENTRIES = "/api/v1/marketplace/entries/"


def upload(client, raw: bytes, content_type: str = "application/xml"):
    return client.post(ENTRIES, data=raw, content_type=content_type)


def quirky(signed: bytes) -> bytes:
    """The same signed entry with bytes outside the signed part changed: a different XML declaration and
    other whitespace after the root. The signature still holds; a store that re-serialised would lose them."""
    body = signed.split(b"?>", 1)[1]
    return b'<?xml version="1.0" encoding="utf-8"?>' + body.rstrip() + b"\n\n\t\n"


def test_creator_uploads_a_signed_entry_and_gets_its_location(owner, registered, entry_for, token_client):
    registered(owner, "owner")
    response = upload(token_client(owner), entry_for("owner"))
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["identifier"] == IMAGE.identifier
    assert body["endorser"] == "creator@example.org"
    assert body["created"] == "2024-01-01T12:00:00Z"
    assert body["status"] == "valid"
    assert (body["os"], body["os_version"], body["arch"], body["kind"]) == ("Ubuntu", "24.04", "x86_64", "machine")
    assert body["sha256"] == IMAGE.checksums["SHA-256"]
    assert response["Location"] == body["url"]
    assert response["Location"].endswith(
        f"/api/v1/marketplace/entries/{IMAGE.identifier}/creator@example.org/2024-01-01T12:00:00Z/"
    )
    entry = Entry.objects.get()
    assert entry.is_latest and entry.uploader == owner and entry.key.owner == owner
    audit = AuditEntry.objects.get(action="marketplace.entry.uploaded", object_id=str(entry.pk))
    assert audit.actor == owner and audit.details["change"] == "new"


def test_rdf_xml_content_type_is_accepted_too(owner, registered, entry_for, api_as):
    registered(owner, "owner")
    assert upload(api_as(owner), entry_for("owner"), "application/rdf+xml").status_code == 201


def test_a_retried_upload_with_the_same_idempotency_key_gets_the_first_answer(owner, registered, entry_for, api_as):
    registered(owner, "owner")
    client = api_as(owner)
    raw = entry_for("owner")
    first = client.post(ENTRIES, data=raw, content_type="application/xml", HTTP_IDEMPOTENCY_KEY="upload-1")
    again = client.post(ENTRIES, data=raw, content_type="application/xml", HTTP_IDEMPOTENCY_KEY="upload-1")
    assert first.status_code == again.status_code == 201
    assert again["Location"] == first["Location"]
    assert again["Idempotent-Replayed"] == "true"
    # Without the key the same retry is, correctly, a timeline conflict.
    assert upload(client, raw).status_code == 409
    assert Entry.objects.count() == 1


def test_other_content_types_are_refused_with_415(owner, registered, entry_for, api_as):
    registered(owner, "owner")
    assert upload(api_as(owner), entry_for("owner"), "text/plain").status_code == 415
    assert not Entry.objects.exists()


def test_original_bytes_come_back_unchanged_through_the_api(owner, registered, entry_for, api_as, api):
    registered(owner, "owner")
    raw = quirky(entry_for("owner", description="Two  spaces\tand a tab."))
    location = upload(api_as(owner), raw)["Location"]
    api.logout()
    by_query = api.get(location, {"format": "xml"})
    assert by_query.status_code == 200
    assert by_query.content == raw
    assert by_query["Content-Type"] == "application/xml"
    by_accept = api.get(location, HTTP_ACCEPT="application/xml")
    assert by_accept.content == raw
    as_rdf = api.get(location, HTTP_ACCEPT="application/rdf+xml")
    assert as_rdf.content == raw and as_rdf["Content-Type"] == "application/rdf+xml"
    as_json = api.get(location)
    assert as_json["Content-Type"] == "application/json"
    assert as_json.json()["xml_url"].endswith("?format=xml")


def test_a_missing_entry_is_a_json_404_even_when_xml_is_asked_for(api):
    url = f"{ENTRIES}{IMAGE.identifier}/creator@example.org/2024-01-01T12:00:00Z/"
    for response in (api.get(url, {"format": "xml"}), api.get(url, HTTP_ACCEPT="application/xml"), api.get(url)):
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    assert api.get(f"{ENTRIES}{IMAGE.identifier}/creator@example.org/yesterday/").status_code == 404


def test_original_bytes_come_back_unchanged_through_the_page_download(owner, registered, entry_for, api_as, client):
    registered(owner, "owner")
    raw = quirky(entry_for("owner"))
    upload(api_as(owner), raw)
    page = client.get(f"/marketplace/entries/{IMAGE.identifier}/creator@example.org/2024-01-01T12:00:00Z/")
    assert page.status_code == 200
    link = re.search(rb'href="([^"]+signed\.xml)"', page.content).group(1).decode()
    download = client.get(link)
    assert download.status_code == 200
    assert download.content == raw
    assert download["Content-Disposition"].startswith("attachment;")


# --- Refusals, each with its own rule --------------------------------------------------------------------


def refused(client, raw: bytes, status: int = 400) -> dict:
    response = upload(client, raw)
    assert response.status_code == status, response.json()
    assert not Entry.objects.exists()
    return response.json()


def test_unsigned_entry_is_refused(owner, registered, api_as):
    registered(owner, "owner")
    body = refused(api_as(owner), unsigned_entry(endorser_email="creator@example.org"))
    assert body["code"] == "unsigned"
    assert "not signed" in body["detail"]


def test_entry_changed_after_signing_is_refused(owner, registered, entry_for, api_as):
    registered(owner, "owner")
    raw = entry_for("owner").replace(b"Ubuntu 24.04 LTS", b"Ubuntu 24.04 LTZ")
    body = refused(api_as(owner), raw)
    assert body["code"] == "bad-signature"
    assert "changed after it was signed" in body["detail"]


def test_entry_signed_with_an_unregistered_key_is_refused(owner, entry_for, api_as):
    body = refused(api_as(owner), entry_for("owner"))
    assert body["code"] == "unknown-key"
    assert "not known" in body["detail"]


def test_key_trusted_but_not_registered_to_anyone_is_refused(owner, keyring, entry_for, api_as):
    from marketplace import signing

    signing.key_trust(keyring["owner"].armored)  # e.g. a registration whose database write failed
    body = refused(api_as(owner), entry_for("owner"))
    assert body["code"] == "unregistered-key"
    assert keyring["owner"].fingerprint in body["detail"]


def test_entry_signed_after_its_key_was_revoked_is_refused(owner, registered, entry_for, api_as):
    from marketplace import services

    key = registered(owner, "owner")
    key = services.pgp_key_revoke(actor=owner, fingerprint=key.fingerprint)
    signed_after = key.revoked_at.replace(microsecond=0) + dt.timedelta(seconds=1)
    body = refused(api_as(owner), entry_for("owner", at=signed_after))
    assert body["code"] == "revoked-key"
    assert "revoked" in body["detail"]


def test_entry_claiming_an_email_not_on_the_key_is_refused(owner, registered, keyring, api_as):
    registered(owner, "owner")
    raw = keyring["owner"].sign_endorsed(unsigned_entry(), email="someone.else@example.org", created=T0)
    body = refused(api_as(owner), raw)
    assert body["code"] == "email-not-on-key"
    assert "someone.else@example.org" in body["detail"]


def test_entry_whose_issuer_names_another_key_is_refused(owner, staff, registered, keyring, api_as):
    registered(owner, "owner")
    registered(staff, "staff")
    raw = keyring["owner"].sign_endorsed(unsigned_entry(), issuer=f"OpenPGP:{keyring['staff'].fingerprint}", created=T0)
    body = refused(api_as(owner), raw)
    assert body["code"] == "issuer-mismatch"
    assert keyring["staff"].fingerprint in body["detail"]


def test_signature_copied_from_another_entry_is_refused(owner, registered, entry_for, api_as):
    registered(owner, "owner")
    first = entry_for("owner", title="First")
    second = entry_for("owner", title="Second", at=T0.replace(hour=13))
    signature = re.search(rb"<sig:Signature.*</sig:Signature>", first, re.DOTALL).group(0)
    forged = re.sub(rb"<sig:Signature.*</sig:Signature>", lambda _m: signature, second, flags=re.DOTALL)
    body = refused(api_as(owner), forged)
    assert body["code"] == "signature-copied"


def test_invalid_metadata_is_refused_with_every_problem_listed(owner, registered, api_as):
    registered(owner, "owner")
    raw = unsigned_entry().replace(b"<slreq:bytes>", b"<slreq:bytes>x", 1)
    body = refused(api_as(owner), raw)
    assert body["code"] == body["errors"][0]["rule"]
    assert all({"rule", "message"} <= set(problem) for problem in body["errors"])


def test_hostile_xml_is_refused_before_parsing(owner, api_as):
    bomb = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><r>&b;</r>'
    body = refused(api_as(owner), bomb)
    assert body["code"] in {"dtd-forbidden", "entity-forbidden"}


def test_oversized_document_is_refused(owner, api_as, settings):
    settings.MARKETPLACE_MAX_ENTRY_BYTES = 2048
    body = refused(api_as(owner), unsigned_entry(description="x" * 4000))
    assert body["code"] == "too-large"


def test_entry_dated_in_the_future_is_refused(owner, registered, entry_for, api_as):
    from django.utils import timezone

    registered(owner, "owner")
    later = (timezone.now() + dt.timedelta(days=1)).replace(microsecond=0)
    body = refused(api_as(owner), entry_for("owner", at=later))
    assert body["code"] == "created-in-future"


def test_anonymous_upload_is_refused_with_401(api, entry_for):
    response = upload(api, entry_for("owner"))
    assert response.status_code == 401
    assert not Entry.objects.exists()


def test_entries_signed_with_the_site_key_count_without_an_account(owner, keyring, entry_for, api_as):
    from marketplace import signing
    from marketplace.models import SiteKey

    info = signing.key_trust(keyring["owner"].armored)
    SiteKey.objects.create(
        fingerprint=info.fingerprint, uid=info.uids[0], email=info.emails[0], armored=info.armored, created=info.created
    )
    response = upload(api_as(owner), entry_for("owner"))
    assert response.status_code == 201, response.json()
    entry = Entry.objects.get()
    assert entry.key is None and entry.fingerprint == keyring["owner"].fingerprint
    assert response.json()["status"] == "valid"


def test_admin_lists_marketplace_rows_read_only(client, staff, owner, registered, entry_for):
    from marketplace import services

    registered(owner, "owner")
    services.entry_upload(raw=entry_for("owner"), uploader=owner)
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    for model in ("pgpkey", "endorser", "image", "entry", "sitekey", "sitepolicy"):
        assert client.get(f"/admin/marketplace/{model}/").status_code == 200
    entry = Entry.objects.get()
    assert client.get(f"/admin/marketplace/entry/{entry.pk}/change/").status_code == 200
    assert client.post(f"/admin/marketplace/entry/{entry.pk}/delete/").status_code == 403
    for model in ("image", "entry"):  # the kind filter offers the two kinds without reading every row
        assert entry.kind == "machine"
        assert len(client.get(f"/admin/marketplace/{model}/", {"kind": "machine"}).context["cl"].result_list) == 1
        assert len(client.get(f"/admin/marketplace/{model}/", {"kind": "disk"}).context["cl"].result_list) == 0


@pytest.mark.django_db(transaction=True)
def test_an_upload_runs_one_gpg_process_with_no_transaction_open(owner, registered, entry_for):
    from unittest import mock

    from django.db import connection

    from marketplace import services
    from marketplace.signing import gpg
    from tests.marketplace.conftest import OTHER_IMAGE

    registered(owner, "owner")
    services.entry_upload(raw=entry_for("owner", image=OTHER_IMAGE), uploader=owner)  # the keyring is open now
    raw = entry_for("owner")  # signed before counting
    started_in_transaction = []
    start = gpg.gnupg.Popen

    def spy(*args, **kwargs):
        started_in_transaction.append(connection.in_atomic_block)
        return start(*args, **kwargs)

    with mock.patch.object(gpg.gnupg, "Popen", side_effect=spy):
        services.entry_upload(raw=raw, uploader=owner)
    assert started_in_transaction == [False]  # one gpg process (key facts from the database), no lock held
    assert Entry.objects.count() == 2
