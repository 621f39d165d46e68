"""``POST marketplace/entries/validate/``: the verdict without storing anything, for anyone."""

from __future__ import annotations

import pytest
from rest_framework.throttling import SimpleRateThrottle

from marketplace.models import Entry
from tests.marketplace.conftest import IMAGE, unsigned_entry

pytestmark = pytest.mark.django_db

VALIDATE = "/api/v1/marketplace/entries/validate/"


def validate(client, raw: bytes) -> dict:
    response = client.post(VALIDATE, data=raw, content_type="application/xml")
    assert response.status_code == 200
    return response.json()


def test_anonymous_user_validates_a_good_signed_entry(owner, registered, entry_for, api, keyring):
    registered(owner, "owner")
    body = validate(api, entry_for("owner"))
    assert body["valid"] is True
    assert body["errors"] == []
    assert body["identifier"] == IMAGE.identifier
    assert body["signature"]["kind"] == "openpgp"
    assert body["signature"]["verified"] is True
    assert body["signature"]["fingerprint"] == keyring["owner"].fingerprint
    assert "creator@example.org" in body["signature"]["message"]
    assert not Entry.objects.exists()


def test_a_valid_but_unsigned_document_reports_format_and_signature_apart(api):
    body = validate(api, unsigned_entry(endorser_email="creator@example.org"))
    assert body["valid"] is True
    assert body["signature"] == {
        "kind": "none",
        "verified": False,
        "fingerprint": None,
        "check": "unsigned",
        "message": body["signature"]["message"],
    }


def test_an_unregistered_signer_is_reported_without_storing(entry_for, api):
    body = validate(api, entry_for("owner"))
    assert body["valid"] is True
    assert body["signature"]["verified"] is False
    assert body["signature"]["check"] == "unknown-key"


def test_every_format_problem_is_listed_by_rule(api):
    raw = unsigned_entry(os_arch="x86_64").replace(b"<slreq:bytes>", b"<slreq:bytes>-", 1)
    raw = raw.replace(b"<dcterms:type>base</dcterms:type>", b"")
    body = validate(api, raw)
    assert body["valid"] is False
    rules = [error["rule"] for error in body["errors"]]
    assert len(rules) >= 2
    assert all(error["message"] for error in body["errors"])
    assert body["signature"]["verified"] is False and body["signature"]["check"] == "not-checked"


def test_not_xml_is_a_problem_not_a_crash(api):
    body = validate(api, b"hello")
    assert body["valid"] is False
    assert body["errors"][0]["rule"] == "not-xml"


def test_validation_is_rate_limited_per_address(api, monkeypatch):
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "validate", "2/minute")
    raw = unsigned_entry()
    for _ in range(2):
        validate(api, raw)
    refused = api.post(VALIDATE, data=raw, content_type="application/xml")
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
