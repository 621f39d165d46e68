"""The site key: made by ``create_site_key`` (idempotent), its endorsements and deprecations signed by the
server and uploaded through the normal path."""

from __future__ import annotations

import datetime as dt
import stat
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from core.errors import ApplicationError, Conflict
from core.models import AuditEntry
from marketplace import metadata, policy, services, signing
from marketplace.models import Entry, Image, SiteKey
from marketplace.policy.services import policy_change
from marketplace.signing.gpg import gpg_for
from tests.marketplace.conftest import IMAGE, SITE_EMAIL, T0, unsigned_entry

pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_site(settings, tmp_path):
    """Settings for a site that has no key and no passphrase file yet."""
    settings.MARKETPLACE_SITE_GNUPG_HOME = tmp_path / "site-gnupg"
    settings.MARKETPLACE_SITE_KEY_PASSPHRASE_FILE = tmp_path / "secrets" / "site-key.passphrase"
    settings.MARKETPLACE_SITE_KEY_EMAIL = "grid-security@site.example"
    settings.SITE_NAME = "Example Cloud"
    yield settings
    signing.shutdown_agent(settings.MARKETPLACE_SITE_GNUPG_HOME)


def test_create_site_key_makes_a_protected_key_trusts_it_and_prints_it(fresh_site):
    out = StringIO()
    call_command("create_site_key", stdout=out)

    key = SiteKey.objects.get()
    assert key.uid == "Example Cloud <grid-security@site.example>" and key.email == "grid-security@site.example"
    text = out.getvalue()
    assert f"Fingerprint: {key.fingerprint}" in text
    assert "-----BEGIN PGP PUBLIC KEY BLOCK-----" in text and key.armored.strip() in text
    passphrase_file = fresh_site.MARKETPLACE_SITE_KEY_PASSPHRASE_FILE
    assert stat.S_IMODE(passphrase_file.stat().st_mode) == 0o600
    assert len(passphrase_file.read_text().strip()) >= 32
    assert stat.S_IMODE(fresh_site.MARKETPLACE_SITE_GNUPG_HOME.stat().st_mode) == 0o700
    # The secret half needs the passphrase; the public half is in the trusted keyring.
    home = fresh_site.MARKETPLACE_SITE_GNUPG_HOME
    assert signing.key_unlocks(
        gnupghome=home, fingerprint=key.fingerprint, passphrase=passphrase_file.read_text().strip()
    )
    assert not signing.key_unlocks(gnupghome=home, fingerprint=key.fingerprint, passphrase="guess")
    assert signing.key_lookup(key.fingerprint) is not None
    assert AuditEntry.objects.filter(action="marketplace.site_key.created").count() == 1


def test_create_site_key_run_again_keeps_the_same_key(fresh_site):
    call_command("create_site_key", stdout=StringIO())
    first = SiteKey.objects.get()
    passphrase = fresh_site.MARKETPLACE_SITE_KEY_PASSPHRASE_FILE.read_text()
    out = StringIO()
    call_command("create_site_key", stdout=out)
    assert SiteKey.objects.get() == first
    assert f"The site key exists: {first.fingerprint}" in out.getvalue()
    assert fresh_site.MARKETPLACE_SITE_KEY_PASSPHRASE_FILE.read_text() == passphrase
    assert len(gpg_for(fresh_site.MARKETPLACE_SITE_GNUPG_HOME).list_keys(secret=True)) == 1
    assert AuditEntry.objects.filter(action="marketplace.site_key.created").count() == 1


def test_create_site_key_refuses_a_passphrase_that_does_not_unlock_the_key(site_settings):
    site_settings.MARKETPLACE_SITE_KEY_PASSPHRASE_FILE.write_text("not the passphrase\n")
    with pytest.raises(CommandError, match="does not unlock the site key"):
        call_command("create_site_key", stdout=StringIO())
    assert not SiteKey.objects.exists()


def test_the_recorded_site_key_is_what_entry_upload_accepts_without_an_account(site_key, site_settings, staff):
    raw = signing.sign(
        unsigned_entry(IMAGE),
        gnupghome=site_settings.MARKETPLACE_SITE_GNUPG_HOME,
        fingerprint=site_key.fingerprint,
        passphrase=services.site_key_passphrase(),
    )
    entry = services.entry_upload(raw=raw, uploader=staff)
    assert entry.key is None and entry.fingerprint == site_key.fingerprint
    assert entry.endorser.email == SITE_EMAIL


def test_a_site_key_only_in_the_keyring_is_not_the_site_until_recorded(site_settings, staff):
    info = signing.secret_key_find(gnupghome=site_settings.MARKETPLACE_SITE_GNUPG_HOME, email=SITE_EMAIL)
    signing.key_trust(info.armored)  # trusted, but neither registered nor recorded as the site's
    raw = signing.sign(
        unsigned_entry(IMAGE),
        gnupghome=site_settings.MARKETPLACE_SITE_GNUPG_HOME,
        fingerprint=info.fingerprint,
        passphrase=services.site_key_passphrase(),
    )
    with pytest.raises(ApplicationError) as refused:
        services.entry_upload(raw=raw, uploader=staff)
    assert refused.value.code == "unregistered-key"


@pytest.fixture
def creators_image(owner, registered, entry_for):
    registered(owner, "owner")
    services.entry_upload(
        raw=entry_for("owner", alternative="casey-ubuntu", valid=T0 + dt.timedelta(days=9999)), uploader=owner
    )
    return Image.objects.get(identifier=IMAGE.identifier)


def test_site_endorsement_copies_the_image_from_its_newest_entry_and_signs_with_the_site_key(
    creators_image, site_key, staff
):
    entry = services.image_site_endorse(actor=staff, image=creators_image, reason="checked by the security team")

    assert entry.endorser.email == SITE_EMAIL and entry.key is None and entry.fingerprint == site_key.fingerprint
    creators = Entry.objects.get(endorser__email="creator@example.org")
    for column in ("sha1", "sha256", "bytes", "title", "os", "os_version", "arch", "kind", "format", "locations"):
        assert getattr(entry, column) == getattr(creators, column), column
    md = metadata.parse(bytes(entry.raw))
    assert md.alternative == "" and md.valid is None and md.deprecated is None  # the site's own word
    assert md.endorsement.issuer == f"OpenPGP:{site_key.fingerprint}"
    audit = AuditEntry.objects.get(action="marketplace.site.endorsed")
    assert audit.actor == staff and audit.details["reason"] == "checked by the security team"
    assert audit.details["fingerprint"] == site_key.fingerprint


def test_site_deprecation_needs_a_reason_and_an_endorsement_to_deprecate(creators_image, site_key, staff):
    with pytest.raises(ApplicationError, match="reason is required") as missing:
        services.image_site_deprecate(actor=staff, image=creators_image, reason="  ")
    assert missing.value.code == "reason-required"
    with pytest.raises(Conflict) as none:
        services.image_site_deprecate(actor=staff, image=creators_image, reason="unsafe")
    assert none.value.code == "site-not-endorsing"
    assert not Entry.objects.filter(endorser__email=SITE_EMAIL).exists()


def test_site_deprecates_then_endorses_again(creators_image, site_key, staff):
    services.image_site_endorse(actor=staff, image=creators_image)
    deprecated = services.image_site_deprecate(actor=staff, image=creators_image, reason="CVE-2024-0001")
    assert deprecated.deprecated and deprecated.deprecated_reason == "CVE-2024-0001"
    assert metadata.parse(bytes(deprecated.raw)).deprecated == "CVE-2024-0001"
    again = services.image_site_endorse(actor=staff, image=creators_image)
    assert not again.deprecated
    timeline = list(Entry.objects.filter(endorser__email=SITE_EMAIL).order_by("created"))
    assert [e.deprecated for e in timeline] == [False, True, False]
    assert [e.is_latest for e in timeline] == [False, False, True]
    assert timeline[0].created < timeline[1].created < timeline[2].created  # within a second: still ordered
    assert AuditEntry.objects.filter(action="marketplace.site.deprecated").get().details["reason"] == "CVE-2024-0001"


def test_site_endorsement_may_expire(creators_image, site_key, staff):
    until = (timezone.now() + dt.timedelta(days=30)).replace(microsecond=0)
    entry = services.image_site_endorse(actor=staff, image=creators_image, valid_until=until)
    assert entry.valid_until == until
    with pytest.raises(ApplicationError) as past:
        services.image_site_endorse(
            actor=staff, image=creators_image, valid_until=timezone.now() - dt.timedelta(days=1)
        )
    assert past.value.code == "valid-until-past"


def test_endorsing_without_a_site_key_is_refused(creators_image, staff, site_settings):
    with pytest.raises(Conflict) as refused:
        services.image_site_endorse(actor=staff, image=creators_image)
    assert refused.value.code == "site-key-missing"
    assert "create_site_key" in refused.value.message


def test_a_lost_passphrase_file_is_named_when_signing(creators_image, site_key, staff, site_settings):
    site_settings.MARKETPLACE_SITE_KEY_PASSPHRASE_FILE.unlink()
    with pytest.raises(Conflict) as refused:
        services.image_site_endorse(actor=staff, image=creators_image)
    assert refused.value.code == "site-key-passphrase-missing"
    assert str(site_settings.MARKETPLACE_SITE_KEY_PASSPHRASE_FILE) in refused.value.message


def test_a_wrong_passphrase_is_refused_and_nothing_is_stored(creators_image, site_key, staff, site_settings):
    site_settings.MARKETPLACE_SITE_KEY_PASSPHRASE_FILE.write_text("wrong\n")
    with pytest.raises(ApplicationError) as refused:
        services.image_site_endorse(actor=staff, image=creators_image)
    assert (refused.value.status, refused.value.code) == (400, "pgp-passphrase")
    assert not Entry.objects.filter(endorser__email=SITE_EMAIL).exists()


def test_site_key_api_serves_the_public_key_to_anyone(api, site_key):
    body = api.get("/api/v1/marketplace/site-key/").json()
    assert body["fingerprint"] == site_key.fingerprint and body["armored"] == site_key.armored
    assert "PRIVATE" not in body["armored"]


def test_site_key_api_is_404_before_there_is_a_key(api, db):
    response = api.get("/api/v1/marketplace/site-key/")
    assert response.status_code == 404 and response.json()["code"] == "site-key-missing"


def test_site_endorsement_counts_for_the_policy(creators_image, site_key, staff):
    policy_change(actor=staff, rules=policy.PolicyRules.from_json({"required_endorsers": {"k": 1, "of": ["site"]}}))
    assert not policy.evaluate(creators_image).allowed
    services.image_site_endorse(actor=staff, image=creators_image)
    assert policy.evaluate(creators_image).allowed
