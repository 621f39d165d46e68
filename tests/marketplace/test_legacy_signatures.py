"""Legacy StratusLab entries: an enveloped XML-DSig over an X.509 certificate, accepted when the certificate
chains to a CA the site trusts (``MARKETPLACE_X509_CA_DIR``) and names the endorsement, refused otherwise with
the rule that failed. The tests run a small CA of their own (tests/marketplace/x509_ca.py)."""

from __future__ import annotations

import base64
import datetime as dt
import re

import pytest
from cryptography.hazmat.primitives import hashes
from lxml import etree

from core.errors import ApplicationError
from marketplace import metadata, selectors, services, signing
from marketplace.models import Endorser, Entry
from tests.marketplace.conftest import OTHER_IMAGE, SITE_EMAIL, Image, unsigned_entry
from tests.marketplace.x509_ca import NOW, CertificateAuthority, Credential, xmldsig_sign

pytestmark = pytest.mark.django_db

ENTRIES = "/api/v1/marketplace/entries/"
VALIDATE = "/api/v1/marketplace/entries/validate/"
LOOMIS = "loomis@lal.example.org"


@pytest.fixture(scope="session")
def grid_ca() -> CertificateAuthority:
    return CertificateAuthority.create("Test Grid CA")


@pytest.fixture(scope="session")
def rogue_ca() -> CertificateAuthority:
    """A CA with the same name as the trusted one, but another key: nobody trusts it."""
    return CertificateAuthority.create("Test Grid CA")


@pytest.fixture(scope="session")
def loomis(grid_ca) -> Credential:
    return grid_ca.issue("Charles Loomis", email=LOOMIS)


@pytest.fixture(autouse=True)
def trusted_cas(settings, tmp_path, grid_ca):
    """The site trusts ``grid_ca`` (certificate and CRL installed as the grid lays them out)."""
    settings.MARKETPLACE_X509_CA_DIR = str(grid_ca.install(tmp_path / "certificates"))
    return tmp_path / "certificates"


@pytest.fixture
def creators_entry(owner, registered, entry_for):
    registered(owner, "owner")
    return services.entry_upload(raw=entry_for("owner"), uploader=owner)


def upload(client, raw: bytes):
    return client.post(ENTRIES, data=raw, content_type="application/xml")


def legacy(credential: Credential, *, image: Image = OTHER_IMAGE, email: str = LOOMIS, **kwargs) -> bytes:
    return xmldsig_sign(unsigned_entry(image), credential, email=email, **kwargs)


def verify(raw: bytes) -> signing.SignatureCheck:
    return signing.verify(raw, metadata.parse(raw))


# --- Accepted ---------------------------------------------------------------------------------------------


def test_an_entry_signed_by_a_trusted_cas_certificate_is_accepted_and_its_subject_holds_the_endorser(
    owner, api_as, loomis
):
    raw = legacy(loomis)

    response = upload(api_as(owner), raw)

    assert response.status_code == 201, response.json()
    entry = Entry.objects.get()
    assert bytes(entry.raw) == raw
    assert entry.fingerprint == loomis.certificate.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303
    assert entry.issuer == loomis.issuer
    endorser = Endorser.objects.get(email=LOOMIS)
    assert (endorser.account_id, endorser.certificate_subject) == (None, loomis.subject)


def test_validate_reports_a_verified_xmldsig_signature_and_who_made_it(api, loomis):
    body = api.post(VALIDATE, data=legacy(loomis), content_type="application/xml").json()

    assert body["valid"] is True
    assert body["signature"]["kind"] == "xmldsig"
    assert body["signature"]["verified"] is True
    assert "CN=Charles Loomis" in body["signature"]["message"]


def test_the_grids_slash_form_of_the_subject_and_an_email_in_the_dn_are_accepted(grid_ca):
    credential = grid_ca.issue("Grid User", email="grid.user@cern.example.ch", email_in_subject=True)
    grid_subject = "/C=FR/O=Altostratus Test Grid/CN=Grid User/emailAddress=grid.user@cern.example.ch"

    check = verify(
        legacy(
            credential,
            email="Grid.User@cern.example.ch",
            subject=grid_subject,
            issuer="/C=FR/O=Altostratus Test Grid/CN=Test Grid CA",
        )
    )

    assert check.verified, check.message


def test_a_certificate_issued_by_an_intermediate_ca_in_keyinfo_is_accepted(grid_ca, trusted_cas):
    intermediate = grid_ca.issue_ca("Test Grid Intermediate CA")
    credential = intermediate.issue("Ines Intermediate", email="ines@lab.example.org")
    credential.chain = (intermediate.certificate,)

    check = verify(legacy(credential, email="ines@lab.example.org"))

    assert check.verified, check.message


def test_a_later_entry_by_the_same_certificate_subject_extends_its_timeline(owner, api_as, loomis, grid_ca):
    client = api_as(owner)
    assert upload(client, legacy(loomis, created=NOW - dt.timedelta(days=2))).status_code == 201
    renewed = grid_ca.issue("Charles Loomis", email=LOOMIS)  # a renewed certificate: same subject, new key

    response = upload(client, legacy(renewed, created=NOW - dt.timedelta(days=1)))

    assert response.status_code == 201, response.json()
    assert Entry.objects.filter(endorser__email=LOOMIS).count() == 2


# --- Refused, with the rule -------------------------------------------------------------------------------


def test_a_tampered_entry_is_refused_as_bad_signature_and_nothing_is_stored(owner, api_as, loomis):
    tampered = legacy(loomis).replace(b"Ubuntu 24.04 LTS", b"Ubuntu 24.04 LTS (patched)")

    response = upload(api_as(owner), tampered)

    assert response.status_code == 400
    assert response.json()["code"] == "bad-signature"
    assert not Entry.objects.exists()
    assert not Endorser.objects.exists()


def test_a_changed_signature_value_is_refused_as_bad_signature(loomis):
    raw = legacy(loomis)
    value = re.search(rb"<ds:SignatureValue>([^<]+)</ds:SignatureValue>", raw).group(1)
    flipped = base64.b64encode(bytes([base64.b64decode(value)[0] ^ 1]) + base64.b64decode(value)[1:])

    check = verify(raw.replace(value, flipped))

    assert (check.verified, check.check) == (False, "bad-signature")


def test_a_certificate_from_an_untrusted_ca_is_refused_even_when_the_ca_has_the_trusted_name(rogue_ca):
    impostor = rogue_ca.issue("Charles Loomis", email=LOOMIS)

    check = verify(legacy(impostor))

    assert (check.verified, check.check) == (False, "certificate-untrusted")
    assert "CN=Test Grid CA" in check.message


def test_no_configured_ca_means_no_legacy_entry_is_trusted(settings, loomis):
    settings.MARKETPLACE_X509_CA_DIR = ""

    check = verify(legacy(loomis))

    assert (check.verified, check.check) == (False, "certificate-untrusted")
    assert "MARKETPLACE_X509_CA_DIR" in check.message


def test_an_expired_certificate_is_refused(grid_ca):
    expired = grid_ca.issue(
        "Old Timer",
        email="old@lab.example.org",
        not_before=NOW - dt.timedelta(days=800),
        not_after=NOW - dt.timedelta(days=1),
    )

    check = verify(legacy(expired, email="old@lab.example.org", created=NOW - dt.timedelta(days=30)))

    assert (check.verified, check.check) == (False, "certificate-expired")
    assert "expired at" in check.message


def test_a_certificate_not_yet_valid_is_refused(grid_ca):
    early = grid_ca.issue("Early Bird", email="early@lab.example.org", not_before=NOW + dt.timedelta(days=1))

    assert verify(legacy(early, email="early@lab.example.org")).check == "certificate-not-yet-valid"


def test_a_certificate_on_its_cas_crl_is_refused(grid_ca, tmp_path, settings):
    revoked = grid_ca.issue("Lost Laptop", email="lost@lab.example.org")
    grid_ca.revoke(revoked)
    try:
        settings.MARKETPLACE_X509_CA_DIR = str(grid_ca.install(tmp_path / "with-crl"))

        check = verify(legacy(revoked, email="lost@lab.example.org"))
    finally:
        grid_ca.revoked.clear()

    assert (check.verified, check.check) == (False, "certificate-revoked")


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"subject": "CN=Someone Else,O=Altostratus Test Grid,C=FR"}, "subject-mismatch"),
        ({"issuer": "CN=Another CA,O=Altostratus Test Grid,C=FR"}, "issuer-mismatch"),
        ({"email": "someone.else@lal.example.org"}, "email-not-on-certificate"),
    ],
)
def test_the_endorsement_must_name_the_certificate(loomis, overrides, rule):
    check = verify(legacy(loomis, **overrides))

    assert (check.verified, check.check) == (False, rule)


def test_a_signature_over_part_of_the_document_is_refused_as_malformed(loomis):
    partial = legacy(loomis).replace(b'<ds:Reference URI="">', b'<ds:Reference URI="#part">')

    check = verify(partial)

    assert (check.verified, check.check) == (False, "signature-malformed")
    assert 'URI=""' in check.message


def test_a_signature_without_a_certificate_is_refused_as_malformed(loomis):
    root = etree.fromstring(legacy(loomis))
    key_info = root.find(".//{http://www.w3.org/2000/09/xmldsig#}KeyInfo")
    key_info.getparent().remove(key_info)

    check = verify(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))

    assert (check.verified, check.check) == (False, "signature-malformed")


def test_a_garbled_certificate_is_refused_as_malformed(loomis):
    raw = legacy(loomis)
    garbled = re.sub(rb"<ds:X509Certificate>[^<]+", b"<ds:X509Certificate>bm90IGEgY2VydGlmaWNhdGU=", raw)

    check = verify(garbled)

    assert (check.verified, check.check) == (False, "signature-malformed")


def test_a_ca_directory_file_that_is_not_a_certificate_is_ignored(trusted_cas, loomis):
    (trusted_cas / "README.0").write_text("not a certificate")

    assert verify(legacy(loomis)).verified


# --- Who holds the endorser e-mail ------------------------------------------------------------------------


def test_a_certificate_cannot_endorse_as_an_accounts_endorser_email(creators_entry, grid_ca, owner, api_as):
    email = creators_entry.endorser.email
    impostor = grid_ca.issue("Casey Creator", email=email)

    response = upload(api_as(owner), legacy(impostor, email=email))

    assert response.status_code == 400
    assert response.json()["code"] == "endorser-taken"


def test_another_certificate_subject_cannot_take_over_a_certificates_endorser_email(owner, api_as, loomis, grid_ca):
    client = api_as(owner)
    assert upload(client, legacy(loomis, created=NOW - dt.timedelta(days=1))).status_code == 201
    other = grid_ca.issue("Not Loomis", email=LOOMIS)

    response = upload(client, legacy(other))

    assert response.status_code == 400
    assert response.json()["code"] == "endorser-taken"
    assert loomis.subject in response.json()["detail"]


def test_a_certificate_cannot_endorse_as_the_site(grid_ca, site_key):
    credential = grid_ca.issue("Site Impostor", email=SITE_EMAIL)

    raw = legacy(credential, email=SITE_EMAIL)
    assert verify(raw).verified  # the CA vouches for the address ...

    with pytest.raises(ApplicationError) as refused:
        services.entry_upload(raw=raw, uploader=None)

    assert refused.value.code == "email-not-owner"  # ... but the site e-mail is nobody's
    assert not Endorser.objects.filter(email=SITE_EMAIL).exists()


def test_an_account_cannot_take_a_certificate_endorsers_email(owner, api_as, loomis):
    assert upload(api_as(owner), legacy(loomis)).status_code == 201

    assert selectors.email_claim(LOOMIS, owner) is not None
