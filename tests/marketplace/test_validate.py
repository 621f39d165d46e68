"""``POST marketplace/entries/validate/``: the verdict without storing anything, for anyone; and the format
refusals found by attacker tests, each over HTTP on validation and on upload."""

from __future__ import annotations

import pytest
from rest_framework.throttling import SimpleRateThrottle

from marketplace.models import Entry
from tests.marketplace.conftest import IMAGE, T0, unsigned_entry

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


# --- Attacks refused by rule, on validation and on upload ---------------------------------------------------

DECLARATION = b"<?xml version='1.0' encoding='UTF-8'?>\n"
XHTML_SCRIPT = b'<h:div xmlns:h="http://www.w3.org/1999/xhtml"><h:script>alert(1)</h:script></h:div>'


def comment_before_root(raw: bytes) -> bytes:
    return raw.replace(DECLARATION, DECLARATION + b"<!-- not covered by the signature -->\n", 1)


def text_after_signature(raw: bytes) -> bytes:
    return raw.replace(b"</sig:Signature>", b"</sig:Signature>not covered by the signature", 1)


def latin_1(raw: bytes) -> bytes:
    return raw.replace(DECLARATION, b"<?xml version='1.0' encoding='ISO-8859-1'?>\n", 1)


def script_extension(raw: bytes) -> bytes:
    return raw.replace(b"<dcterms:type>", XHTML_SCRIPT + b"<dcterms:type>", 1)


# (rule, how the attacker changed the document, whether the change is made after signing, fields)
ATTACKS = [
    ("outside-root", comment_before_root, True, {}),
    ("outside-root", lambda raw: raw + b"<!-- not covered -->", True, {}),
    ("after-signature", text_after_signature, True, {}),
    ("encoding", latin_1, True, {}),
    ("extension-invalid", script_extension, False, {}),
    ("location-scheme", lambda raw: raw, False, {"locations": ("javascript:alert(document.cookie)",)}),
    ("location-not-allowed", lambda raw: raw, False, {"locations": ("file:///etc/shadow",)}),
]
IDS = ["comment-before", "comment-after", "text-after-signature", "latin-1", "xhtml-script", "javascript", "file"]


def attack(keyring, change, after_signing: bool, fields: dict) -> bytes:
    """A signed entry (signature good over what it covers) carrying the attack."""
    unsigned = unsigned_entry(**fields)
    if after_signing:
        return change(keyring["owner"].sign_endorsed(unsigned, at=T0))
    return keyring["owner"].sign_endorsed(change(unsigned), at=T0)


@pytest.mark.parametrize(("rule", "change", "after_signing", "fields"), ATTACKS, ids=IDS)
def test_each_attack_is_listed_by_its_rule_on_validation(api, keyring, rule, change, after_signing, fields):
    body = validate(api, attack(keyring, change, after_signing, fields))

    assert body["valid"] is False
    assert [error["rule"] for error in body["errors"]] == [rule]


@pytest.mark.parametrize(("rule", "change", "after_signing", "fields"), ATTACKS, ids=IDS)
def test_each_attack_is_refused_on_upload_with_400(
    owner, registered, api_as, keyring, rule, change, after_signing, fields
):
    registered(owner, "owner")

    response = api_as(owner).post(
        "/api/v1/marketplace/entries/",
        data=attack(keyring, change, after_signing, fields),
        content_type="application/xml",
    )

    assert response.status_code == 400
    assert response.json()["code"] == rule
    assert [error["rule"] for error in response.json()["errors"]] == [rule]
    assert not Entry.objects.exists()


def test_the_signed_entry_itself_is_accepted_on_upload(owner, registered, api_as, keyring):
    registered(owner, "owner")

    response = api_as(owner).post(
        "/api/v1/marketplace/entries/",
        data=keyring["owner"].sign_endorsed(unsigned_entry(), at=T0),
        content_type="application/xml",
    )

    assert response.status_code == 201


def test_file_locations_are_allowed_by_default_only_where_the_demo_writes_its_images(settings):
    allowed = settings.MARKETPLACE_FILE_LOCATION_DIRS

    assert allowed == [str(settings.VAR_DIR / "demo-images")]
