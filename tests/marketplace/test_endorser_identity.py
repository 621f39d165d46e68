"""Who may endorse as whom (DESIGN §2.2): an entry's e-mail must be one its key's owner holds, an endorser
e-mail belongs to one account or to the site, and the key must be usable now, whatever the entry claims.

Each attack here was first reproduced over HTTP against the running portal."""

from __future__ import annotations

import datetime as dt
import io
import re

import pytest
import time_machine
from django.core.checks import Warning as CheckWarning
from django.core.management import call_command
from django.utils import timezone

from accounts import emails
from core.errors import ApplicationError
from marketplace import policy, selectors, services, signing
from marketplace.models import Endorser, Entry, Image, PgpKey, SiteKey
from marketplace.policy import PolicyRules
from tests.factories import UserFactory
from tests.marketplace.conftest import IMAGE, OTHER_IMAGE, SITE_EMAIL, T0, unsigned_entry
from tests.marketplace.keys import generate_key

pytestmark = pytest.mark.django_db

ENTRIES = "/api/v1/marketplace/entries/"
VALIDATE = "/api/v1/marketplace/entries/validate/"
KEYS = "/api/v1/accounts/pgp-keys/"
CREATOR = "creator@example.org"
RESEARCHER_UID = "Rita Researcher <researcher@example.org>"
FORGED_CREATOR_UID = "Casey Creator <creator@example.org>"
FORGED_SITE_UID = f"Test Site <{SITE_EMAIL}>"


@pytest.fixture(scope="session")
def researcher_key(tmp_path_factory):
    """The attacker's key: their own user ID, plus user IDs carrying the creator's and the site's e-mails."""
    home = tmp_path_factory.mktemp("researcher")
    home.chmod(0o700)
    yield generate_key(home, RESEARCHER_UID, extra_uids=[FORGED_CREATOR_UID, FORGED_SITE_UID])
    signing.shutdown_agent(home)


@pytest.fixture
def researcher(db, researcher_key):
    """An approved account whose key is registered: the key carries the account's e-mail, so registering works."""
    user = UserFactory(username="researcher", email="researcher@example.org")
    services.pgp_key_register(actor=user, armored=researcher_key.armored)
    return user


@pytest.fixture
def creators_entry(owner, registered, entry_for):
    registered(owner, "owner")
    return services.entry_upload(raw=entry_for("owner"), uploader=owner)


def upload(client, raw: bytes):
    return client.post(ENTRIES, data=raw, content_type="application/xml")


def forged(key, email: str, *, at: dt.datetime = T0, image=IMAGE, **fields) -> bytes:
    return key.sign(unsigned_entry(image, **fields), email=email, now=at)


# --- An account's key endorses only as the account's own e-mail -------------------------------------------


def test_a_researcher_cannot_upload_as_the_creator_with_a_user_id_carrying_the_creators_email(
    researcher, researcher_key, api_as
):
    response = upload(api_as(researcher), forged(researcher_key, CREATOR, image=OTHER_IMAGE))

    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "email-not-owner"
    assert body["detail"].startswith(
        "slreq:email creator@example.org is not the e-mail of the key's owner (researcher@example.org)"
    )
    assert not Entry.objects.exists() and not Endorser.objects.exists()


def test_a_researcher_cannot_deprecate_the_creators_image(creators_entry, researcher, researcher_key, api_as):
    raw = forged(researcher_key, CREATOR, at=T0 + dt.timedelta(hours=1), deprecated="withdrawn (not really)")

    response = upload(api_as(researcher), raw)

    assert (response.status_code, response.json()["code"]) == (400, "email-not-owner")
    latest = Entry.objects.get(endorser__email=CREATOR, is_latest=True)
    assert latest.pk == creators_entry.pk and not latest.deprecated


def test_a_researcher_cannot_replace_the_sites_latest_endorsement(
    creators_entry, site_key, staff, researcher, researcher_key, api_as
):
    site_entry = services.image_site_endorse(actor=staff, image=creators_entry.image)
    raw = forged(researcher_key, SITE_EMAIL, at=site_entry.created + dt.timedelta(seconds=5), deprecated="revoked")

    response = upload(api_as(researcher), raw)

    assert (response.status_code, response.json()["code"]) == (400, "email-not-owner")
    assert SITE_EMAIL in response.json()["detail"]
    assert Entry.objects.get(endorser__email=SITE_EMAIL, is_latest=True).pk == site_entry.pk


def test_a_forged_creator_endorsement_does_not_pass_a_policy_allowing_only_the_creator(
    researcher, researcher_key, api_as
):
    client = api_as(researcher)
    assert upload(client, forged(researcher_key, researcher.email)).status_code == 201  # the image exists
    assert upload(client, forged(researcher_key, CREATOR, at=T0 + dt.timedelta(hours=1))).status_code == 400
    rules = PolicyRules.from_json({"endorsers_allow": [CREATOR]})

    decision = policy.evaluate(Image.objects.get(identifier=IMAGE.identifier), rules=rules)

    assert not decision.allowed
    assert not Entry.objects.filter(endorser__email=CREATOR).exists()


def test_the_validate_endpoint_reports_an_email_the_keys_owner_does_not_hold(researcher, researcher_key, api):
    response = api.post(VALIDATE, data=forged(researcher_key, CREATOR), content_type="application/xml")

    signature = response.json()["signature"]
    assert (signature["verified"], signature["check"]) == (False, "email-not-owner")
    assert "researcher@example.org" in signature["message"]


def test_the_owner_of_the_key_still_endorses_with_their_own_user_id(researcher, researcher_key, api_as):
    response = upload(api_as(researcher), forged(researcher_key, "researcher@example.org"))

    assert response.status_code == 201, response.json()
    assert Endorser.objects.get().account == researcher


def test_the_site_key_endorses_as_the_site_and_its_endorser_has_no_account(site_key, creators_entry, staff):
    entry = services.image_site_endorse(actor=staff, image=creators_entry.image)

    assert entry.endorser.email == SITE_EMAIL and entry.endorser.account is None


def test_a_site_key_entry_for_another_email_is_refused(site_key, site_settings, staff):
    # A site key whose keyring copy also carries another user ID: only the site e-mail endorses.
    SiteKey.objects.filter(pk=site_key.pk).update(email="other-site@altostratus.test")
    signed = signing.sign(
        unsigned_entry(IMAGE),
        gnupghome=site_settings.MARKETPLACE_SITE_GNUPG_HOME,
        fingerprint=site_key.fingerprint,
        passphrase="the site's own passphrase",
        email=SITE_EMAIL,
        now=timezone.now(),
    )

    with pytest.raises(ApplicationError) as refused:
        services.entry_upload(raw=signed, uploader=staff)

    assert refused.value.code == "email-not-owner"
    assert "other-site@altostratus.test" in refused.value.message


# --- An endorser e-mail belongs to one account or to the site ------------------------------------------------


def test_an_endorser_email_belongs_to_the_account_of_its_first_entry(creators_entry, owner):
    assert Endorser.objects.get(email=CREATOR).account == owner


def test_an_endorser_email_taken_by_one_account_is_refused_to_another_holding_it_now(
    creators_entry, owner, tmp_path_factory, api_as
):
    # The creator moved to another address; someone else got the old one (as an admin could have done).
    owner.email = "casey@new.example.org"
    owner.save()
    newcomer = UserFactory(username="newcomer", email=CREATOR)
    home = tmp_path_factory.mktemp("newcomer")
    home.chmod(0o700)
    try:
        key = generate_key(home, "New Comer <creator@example.org>")
        services.pgp_key_register(actor=newcomer, armored=key.armored)

        response = upload(api_as(newcomer), key.sign(unsigned_entry(IMAGE), now=T0 + dt.timedelta(hours=1)))
    finally:
        signing.shutdown_agent(home)

    assert (response.status_code, response.json()["code"]) == (400, "endorser-taken")
    assert CREATOR in response.json()["detail"]
    assert Entry.objects.get(endorser__email=CREATOR, is_latest=True).pk == creators_entry.pk


def test_the_marketplace_claims_the_site_email_and_endorser_emails(creators_entry, owner, site_settings):
    site_settings.MARKETPLACE_SITE_KEY_EMAIL = "Site@Altostratus.test"

    assert selectors.email_claim(SITE_EMAIL, None)
    assert selectors.email_claim(SITE_EMAIL, owner)
    assert selectors.email_claim(CREATOR, None)
    assert selectors.email_claim(CREATOR, UserFactory(username="other"))
    assert selectors.email_claim(CREATOR, owner) is None
    assert selectors.email_claim("free@example.org", None) is None
    # Registered with accounts at start-up, so registration, approval and e-mail changes ask it.
    assert emails.email_claim(SITE_EMAIL) == selectors.email_claim(SITE_EMAIL, None)


def test_every_recorded_site_key_email_is_claimed(site_key, settings):
    settings.MARKETPLACE_SITE_KEY_EMAIL = "newsite@altostratus.test"

    assert selectors.email_claim(SITE_EMAIL, None)


def test_an_account_with_the_site_email_cannot_be_registered(site_settings, api):
    body = {
        "username": "sitewannabe",
        "email": SITE_EMAIL.upper(),
        "first_name": "Site",
        "last_name": "Wannabe",
        "password": "Lunar-Orbit-Paper-42",
        "dn": "",
        "message": "",
        "accept_terms": True,
    }

    response = api.post("/api/v1/accounts/registrations/", body, format="json")

    assert response.status_code == 400, response.json()
    assert response.json()["detail"].startswith("email: ")
    assert "site" in response.json()["errors"]["email"][0]


# --- The site key's fingerprint is reserved --------------------------------------------------------------


def test_an_account_cannot_register_the_site_key_as_its_own(site_key, site_settings, api_as, staff):
    holder = UserFactory(username="siteholder", email=SITE_EMAIL)  # made before the e-mail was reserved

    response = api_as(holder).post(KEYS, {"armored": site_key.armored}, format="json")

    assert response.status_code == 409, response.json()
    assert response.json()["code"] == "pgp-key-reserved"
    assert not PgpKey.objects.exists()
    assert api_as(holder).post(f"{KEYS}{site_key.fingerprint}/revoke/").status_code == 404


def test_a_key_still_needs_a_user_id_with_the_accounts_email(researcher_key, api_as):
    user = UserFactory(username="someone", email="someone@example.org")

    response = api_as(user).post(KEYS, {"armored": researcher_key.armored}, format="json")

    assert (response.status_code, response.json()["code"]) == (400, "pgp-key-email")


# --- User IDs not usable for endorsing are marked -------------------------------------------------------


def test_the_keys_api_lists_which_user_ids_may_endorse(researcher, api_as):
    (key,) = api_as(researcher).get(KEYS).json()["results"]

    assert key["uids"] == [RESEARCHER_UID, FORGED_CREATOR_UID, FORGED_SITE_UID]
    assert key["endorsing_uids"] == [RESEARCHER_UID]


def test_the_keys_page_marks_user_ids_not_usable_for_endorsing(researcher, client):
    client.force_login(researcher)

    page = client.get("/marketplace/keys/").content.decode()

    assert page.count("not usable for endorsing") == 2
    assert re.search(r"creator@example\.org&gt;\s*<small[^>]*>\(not usable for endorsing\)", page)


# --- The key must be usable now -------------------------------------------------------------------------


def test_an_entry_of_a_revoked_key_dated_before_the_revocation_is_refused(owner, registered, entry_for, api_as):
    key = registered(owner, "owner")
    services.pgp_key_revoke(actor=owner, fingerprint=key.fingerprint)

    response = upload(api_as(owner), entry_for("owner", at=T0))  # created long before the revocation

    assert (response.status_code, response.json()["code"]) == (400, "revoked-key")
    assert "revoked" in response.json()["detail"]
    assert not Entry.objects.exists()


@pytest.fixture
def short_lived_key(tmp_path_factory):
    """A key made an hour ago that expires a day after its birth (gpg: whole days)."""
    home = tmp_path_factory.mktemp("short")
    home.chmod(0o700)
    born = timezone.now().replace(microsecond=0) - dt.timedelta(hours=1)
    yield generate_key(home, "Shorty <creator@example.org>", born=born, expire="1d"), born
    signing.shutdown_agent(home)


def test_an_entry_signed_before_the_key_expired_is_refused_once_it_has_expired(owner, short_lived_key, api_as):
    key, born = short_lived_key
    registered = services.pgp_key_register(actor=owner, armored=key.armored)
    assert registered.expires is not None
    raw = key.sign_endorsed(
        unsigned_entry(IMAGE), created=born + dt.timedelta(minutes=5), at=born + dt.timedelta(minutes=5)
    )

    with time_machine.travel(registered.expires + dt.timedelta(hours=1), tick=False):
        response = upload(api_as(owner), raw)

    assert (response.status_code, response.json()["code"]) == (400, "key-expired")
    assert "expired" in response.json()["detail"]
    assert not Entry.objects.exists()


def test_an_expired_key_cannot_upload_a_back_dated_signature(owner, pgp_keys, api_as):
    # Valid 2020-01-01 .. 2020-12-31: registered back then, signed (gpg's clock) back then, uploaded now.
    key = pgp_keys.expiring
    info = signing.key_trust(key.armored)
    holder = UserFactory(username="eve", email="eve@example.org")
    PgpKey.objects.create(
        owner=holder, fingerprint=info.fingerprint, uids=list(info.uids), emails=list(info.emails),
        armored=info.armored, created=info.created, expires=info.expires,
    )  # fmt: skip
    at = dt.datetime(2020, 6, 1, tzinfo=dt.UTC)

    response = upload(api_as(holder), key.sign_endorsed(unsigned_entry(IMAGE), created=at, at=at))

    assert (response.status_code, response.json()["code"]) == (400, "key-expired")
    assert "2020-12-31" in response.json()["detail"]


def test_an_expired_signature_is_refused(owner, registered, keyring, api_as):
    registered(owner, "owner")
    at = timezone.now().replace(microsecond=0) - dt.timedelta(days=3)
    raw = keyring["owner"].sign_endorsed(unsigned_entry(IMAGE), created=at, at=at, extra=["--default-sig-expire", "1d"])

    response = upload(api_as(owner), raw)

    assert (response.status_code, response.json()["code"]) == (400, "signature-expired")
    assert "expired" in response.json()["detail"]


def test_a_signature_expiring_later_is_refused_once_it_has_expired(owner, registered, keyring, api_as):
    registered(owner, "owner")
    at = timezone.now().replace(microsecond=0) - dt.timedelta(hours=1)
    raw = keyring["owner"].sign_endorsed(unsigned_entry(IMAGE), created=at, at=at, extra=["--default-sig-expire", "1d"])

    with time_machine.travel(at + dt.timedelta(days=2), tick=False):
        response = upload(api_as(owner), raw)

    assert (response.status_code, response.json()["code"]) == (400, "signature-expired")


# --- Non-ASCII inside the armor ---------------------------------------------------------------------------


def non_ascii_armor(raw: bytes) -> bytes:
    return raw.replace(b"-----END PGP SIGNATURE-----", "é\n-----END PGP SIGNATURE-----".encode())


def test_non_ascii_inside_the_armor_is_a_malformed_signature_on_validate(entry_for, api):
    response = api.post(VALIDATE, data=non_ascii_armor(entry_for("owner")), content_type="application/xml")

    assert response.status_code == 200
    assert response.json()["signature"]["check"] == "signature-malformed"


def test_non_ascii_inside_the_armor_is_refused_on_upload(owner, registered, entry_for, api_as):
    registered(owner, "owner")

    response = upload(api_as(owner), non_ascii_armor(entry_for("owner")))

    assert (response.status_code, response.json()["code"]) == (400, "signature-malformed")


# --- Existing rows that break the rule --------------------------------------------------------------------


@pytest.fixture
def broken_rows(creators_entry, owner, site_key, researcher):
    """Rows stored before the rule: an entry whose e-mail is not its key owner's, an endorser whose entries
    come from two accounts' keys, and an account's key row carrying the site key's fingerprint."""
    researchers_key = PgpKey.objects.get(owner=researcher)
    Entry.objects.filter(pk=creators_entry.pk).update(key=researchers_key)
    second = Image.objects.create(
        identifier=OTHER_IMAGE.identifier, sha1="0" * 40, bytes=1, first_endorsed=T0, updated=T0
    )
    Entry.objects.create(
        image=second, endorser=creators_entry.endorser, created=T0, subject="x", issuer="x", fingerprint="F" * 40,
        key=PgpKey.objects.get(owner=owner), raw=b"", is_latest=True, type="base", bytes=1, sha1="0" * 40,
    )  # fmt: skip
    PgpKey.objects.create(
        owner=researcher, fingerprint=site_key.fingerprint, armored="", created=T0, uids=[], emails=[]
    )
    return site_key


def test_rows_breaking_the_rule_are_listed(broken_rows):
    problems = selectors.identity_problems()

    kinds = sorted(p.kind for p in problems)
    assert kinds == ["email-not-owner", "endorser-several-accounts", "site-key-registered"]
    assert any(CREATOR in p.message and "researcher@example.org" in p.message for p in problems)


def test_the_database_check_warns_about_rows_breaking_the_rule(broken_rows):
    from marketplace.checks import identity_check

    warnings = identity_check(app_configs=None, databases=["default"])

    assert {w.id for w in warnings} == {"marketplace.W001", "marketplace.W002", "marketplace.W003"}
    assert all(isinstance(w, CheckWarning) for w in warnings)
    out = io.StringIO()
    call_command("check", "--database", "default", stdout=out, stderr=out)
    assert "marketplace.W001" in out.getvalue()


def test_the_database_check_is_quiet_on_clean_rows(creators_entry):
    from marketplace.checks import identity_check

    assert identity_check(app_configs=None, databases=["default"]) == []
    assert identity_check(app_configs=None, databases=None) == []  # without --database it stays away


def test_an_unambiguous_endorser_is_given_its_account_by_the_migration(creators_entry, owner):
    from importlib import import_module

    from django.apps import apps

    migration = import_module("marketplace.migrations.0003_endorser_account")
    Endorser.objects.update(account=None)

    migration.backfill_accounts(apps, None)

    assert Endorser.objects.get(email=CREATOR).account == owner


def test_an_account_holding_the_site_email_cannot_endorse_as_the_site(site_key, site_settings, tmp_path_factory):
    holder = UserFactory(username="siteholder", email=SITE_EMAIL)  # made before the e-mail was reserved
    home = tmp_path_factory.mktemp("siteholder")
    home.chmod(0o700)
    try:
        key = generate_key(home, f"Not The Site <{SITE_EMAIL}>")
        services.pgp_key_register(actor=holder, armored=key.armored)  # its own key: the fingerprint is not reserved
        raw = key.sign(unsigned_entry(IMAGE), now=T0)

        with pytest.raises(ApplicationError) as refused:
            services.entry_upload(raw=raw, uploader=holder)
    finally:
        signing.shutdown_agent(home)

    assert refused.value.code == "email-not-owner"
    assert "only the site key" in refused.value.message
    assert not Endorser.objects.filter(email=SITE_EMAIL).exists()  # the site's timelines stay the site's


def test_the_migration_prints_the_rows_breaking_the_rule_with_the_historical_models(broken_rows, capsys):
    from importlib import import_module

    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    migration = import_module("marketplace.migrations.0003_endorser_account")
    state = MigrationExecutor(connection).loader.project_state(("marketplace", "0003_endorser_account"))
    before = (Entry.objects.count(), PgpKey.objects.count(), list(Endorser.objects.values_list("account_id")))

    migration.report_rows_breaking_the_rule(state.apps, None)

    printed = capsys.readouterr().out
    assert "3 group(s) of stored rows" in printed
    assert all(
        f"[{kind}]" in printed for kind in ("email-not-owner", "endorser-several-accounts", "site-key-registered")
    )
    after = (Entry.objects.count(), PgpKey.objects.count(), list(Endorser.objects.values_list("account_id")))
    assert before == after  # reported, not changed


def test_an_endorser_with_entries_from_several_accounts_keys_is_left_without_an_account(broken_rows):
    from importlib import import_module

    from django.apps import apps

    migration = import_module("marketplace.migrations.0003_endorser_account")
    Endorser.objects.update(account=None)

    migration.backfill_accounts(apps, None)

    assert Endorser.objects.get(email=CREATOR).account is None
