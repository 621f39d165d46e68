"""What the policy judges and what people see must not come from whoever uploaded last: the first accepted
entry fixes an image's size and checksums, each endorsement's descriptive claims are its own, the image is
shown as its most trusted current endorsement describes it, and stored locations link only to the web.

Each attack is made over HTTP with real signed entries, as the attacker would make it."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib

import pytest

from marketplace import metadata, policy, selectors, services
from marketplace.models import Entry, Image
from marketplace.policy import PolicyRules
from marketplace.policy.services import policy_change
from tests.marketplace.conftest import IMAGE, OTHER_IMAGE, T0, UBUNTU

pytestmark = pytest.mark.django_db

ENTRIES = "/api/v1/marketplace/entries/"
EVIL_TITLE = "DO NOT USE - see http://evil.example"
UBUNTU_SHA256 = IMAGE.checksums["SHA-256"]
UNRELATED = b"a miner, not ubuntu"
TERABYTES = 9_600_000_000_000


def checksums_of(content: bytes, **claimed: str) -> dict[str, str]:
    """SHA-1 and SHA-256 of ``content``, with ``claimed`` ones (``SHA_256=…``, ``MD5=…``) put over them."""
    sums = {"SHA-1": hashlib.sha1(content).hexdigest(), "SHA-256": hashlib.sha256(content).hexdigest()}  # noqa: S324
    sums.update({name.replace("_", "-"): value for name, value in claimed.items()})
    return sums


@pytest.fixture
def signed(keyring):
    """``signed(name, at=…, content=…, size=…, checksums=…, **fields)``: an entry signed by that key's holder,
    saying whatever it is told to (a hostile endorser's tools write any size or checksum)."""

    def make(name, *, at=T0, content=IMAGE.content, size=None, checksums=None, **fields):
        document = metadata.build(
            image_bytes=len(content) if size is None else size,
            checksums=checksums or checksums_of(content),
            **{**UBUNTU, **fields},
        )
        return keyring[name].sign(document, now=at)

    return make


@pytest.fixture
def published(owner, outsider, staff, registered, signed, api_as):
    """The creator's Ubuntu image; the outsider (mallory) and staff have registered keys too."""
    registered(owner, "owner")
    registered(outsider, "outsider")
    registered(staff, "staff")
    response = api_as(owner).post(ENTRIES, data=signed("owner"), content_type="application/xml")
    assert response.status_code == 201, response.json()
    return Image.objects.get(identifier=IMAGE.identifier)


def post_as(api_as, user, raw: bytes):
    return api_as(user).post(ENTRIES, data=raw, content_type="application/xml")


# --- Size and checksums are fixed by the first accepted entry --------------------------------------------------


def test_the_first_entry_fixes_the_images_size_and_checksums(published):
    assert published.bytes == len(IMAGE.content)
    assert published.checksums == IMAGE.checksums
    assert published.sha256 == UBUNTU_SHA256


def test_an_unrelated_image_claiming_ubuntus_sha256_does_not_pass_ubuntus_checksum_allow(
    published, outsider, signed, api_as
):
    raw = signed("outsider", content=UNRELATED, checksums=checksums_of(UNRELATED, SHA_256=UBUNTU_SHA256))
    assert post_as(api_as, outsider, raw).status_code == 201  # stored: refusing it would let squatters block images
    unrelated = Image.objects.exclude(pk=published.pk).get()
    policy_change(actor=None, rules=PolicyRules(checksums_allow=(UBUNTU_SHA256,)))

    body = api_as(outsider).get(f"/api/v1/marketplace/images/{unrelated.identifier}/policy/").json()
    assert body["allowed"] is False
    [line] = [r for r in body["rules"] if r["rule"] == "checksums_allow"]
    assert line["outcome"] == "failed"
    assert f"the image {IMAGE.identifier} claimed that SHA-256 first" in line["reason"]
    assert policy.evaluate(published).allowed  # the allow list still means Ubuntu, and only it


def test_an_image_that_claimed_a_sha256_first_does_not_keep_the_genuine_image_from_being_published(
    owner, outsider, registered, signed, api_as
):
    registered(owner, "owner")
    registered(outsider, "outsider")
    squat = signed("outsider", content=UNRELATED, checksums=checksums_of(UNRELATED, SHA_256=UBUNTU_SHA256))
    assert post_as(api_as, outsider, squat).status_code == 201
    assert post_as(api_as, owner, signed("owner", at=T0 + dt.timedelta(hours=1))).status_code == 201
    genuine = Image.objects.get(identifier=IMAGE.identifier)
    assert genuine.sha256 == UBUNTU_SHA256
    # The squatter's claim came first, so the SHA-256 vouches for neither to the genuine image's benefit; the
    # identifier (its SHA-1) still does, and the worker checks the download against both before any use.
    decision = policy.evaluate(genuine, rules=PolicyRules(checksums_allow=(UBUNTU_SHA256,)))
    assert not decision.allowed
    assert policy.evaluate(genuine, rules=PolicyRules(checksums_allow=(IMAGE.checksums["SHA-1"],))).allowed


def test_a_checksum_deny_denies_every_image_claiming_that_checksum(published, outsider, signed, api_as):
    raw = signed("outsider", content=UNRELATED, checksums=checksums_of(UNRELATED, SHA_256=UBUNTU_SHA256))
    assert post_as(api_as, outsider, raw).status_code == 201
    rules = PolicyRules(checksums_deny=(UBUNTU_SHA256,), min_endorsements=0)
    decisions = [policy.evaluate(image, rules=rules) for image in Image.objects.all()]
    assert [d.allowed for d in decisions] == [False, False]


def test_a_newer_entry_with_another_sha256_cannot_lift_a_checksum_deny(published, outsider, signed, api_as):
    policy_change(actor=None, rules=PolicyRules(checksums_deny=(UBUNTU_SHA256,)))
    other = hashlib.sha256(b"something else").hexdigest()
    raw = signed("outsider", at=T0 + dt.timedelta(days=1), checksums=checksums_of(IMAGE.content, SHA_256=other))
    response = post_as(api_as, outsider, raw)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "checksum-conflict"
    assert "SHA-256" in body["detail"] and UBUNTU_SHA256 in body["detail"] and other in body["detail"]
    assert Entry.objects.count() == 1
    response = api_as(outsider).get(f"/api/v1/marketplace/images/{IMAGE.identifier}/policy/")
    assert response.json()["allowed"] is False


def test_the_creators_own_later_entry_cannot_change_a_fixed_checksum_either(published, owner, signed, api_as):
    other = hashlib.sha256(b"rebuilt").hexdigest()
    raw = signed("owner", at=T0 + dt.timedelta(days=1), checksums=checksums_of(IMAGE.content, SHA_256=other))
    assert post_as(api_as, owner, raw).json()["code"] == "checksum-conflict"


def test_another_endorsers_entry_claiming_9_6_terabytes_is_refused(published, outsider, signed, api_as):
    raw = signed("outsider", at=T0 + dt.timedelta(days=1), size=TERABYTES, kind="disk")
    response = post_as(api_as, outsider, raw)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "bytes-conflict"
    assert f"is {len(IMAGE.content)} bytes" in body["detail"] and str(TERABYTES) in body["detail"]
    published.refresh_from_db()
    assert published.bytes == len(IMAGE.content)


def test_an_algorithm_without_a_value_is_fixed_by_the_first_entry_that_gives_it(
    published, staff, outsider, signed, api_as
):
    sha512 = hashlib.sha512(IMAGE.content).hexdigest()
    raw = signed("staff", at=T0 + dt.timedelta(hours=1), checksums=checksums_of(IMAGE.content, SHA_512=sha512))
    assert post_as(api_as, staff, raw).status_code == 201
    published.refresh_from_db()
    assert published.checksums["SHA-512"] == sha512

    forged = hashlib.sha512(b"forged").hexdigest()
    raw = signed("outsider", at=T0 + dt.timedelta(hours=2), checksums=checksums_of(IMAGE.content, SHA_512=forged))
    body = post_as(api_as, outsider, raw).json()
    assert body["code"] == "checksum-conflict" and "SHA-512" in body["detail"]


def test_an_md5_once_fixed_cannot_be_changed_by_a_later_entry(published, staff, outsider, signed, api_as):
    md5 = hashlib.md5(IMAGE.content).hexdigest()  # noqa: S324 - a checksum the format allows
    raw = signed("staff", at=T0 + dt.timedelta(hours=1), checksums=checksums_of(IMAGE.content, MD5=md5))
    assert post_as(api_as, staff, raw).status_code == 201
    other = hashlib.md5(b"collision").hexdigest()  # noqa: S324
    raw = signed("outsider", at=T0 + dt.timedelta(hours=2), checksums=checksums_of(IMAGE.content, MD5=other))
    body = post_as(api_as, outsider, raw).json()
    assert body["code"] == "checksum-conflict" and "MD5" in body["detail"] and md5 in body["detail"]


def test_entries_that_agree_with_the_fixed_facts_are_accepted_from_anyone(published, outsider, signed, api_as):
    assert post_as(api_as, outsider, signed("outsider", at=T0 + dt.timedelta(hours=1))).status_code == 201


# --- Descriptive claims are each endorsement's own ------------------------------------------------------------


@pytest.fixture
def defaced(published, outsider, signed, api_as):
    """Mallory's newer entry for the creator's image: same size and checksums, her own kind and title."""
    raw = signed(
        "outsider",
        at=T0 + dt.timedelta(days=1),
        kind="disk",
        title=EVIL_TITLE,
        os="Windows",
        locations=("https://evil.example/x.qcow2",),
    )
    response = post_as(api_as, outsider, raw)
    assert response.status_code == 201, response.json()
    return published


def test_a_newer_entry_from_another_endorser_does_not_change_what_the_image_page_shows(defaced, client):
    html = client.get(f"/marketplace/images/{IMAGE.identifier}/").content.decode()
    assert "<h1>Ubuntu 24.04 LTS</h1>" in html
    assert "<dt>Kind, format</dt><dd>machine qcow2</dd>" in html
    assert 'id="described-by">creator@example.org<' in html
    claims = html[html.index('id="other-claims"') :]
    assert f"<strong>mallory@example.org</strong> claims: title '{EVIL_TITLE}'" in claims
    assert "kind disk" in claims and "os Windows" in claims


def test_the_api_and_the_search_show_the_creators_facts(defaced, api, client):
    detail = api.get(f"/api/v1/marketplace/images/{IMAGE.identifier}/").json()
    assert (detail["title"], detail["kind"], detail["os"], detail["bytes"]) == (
        "Ubuntu 24.04 LTS",
        "machine",
        "Ubuntu",
        len(IMAGE.content),
    )
    # Each endorsement still carries its own claims, marked as its endorser's.
    assert {e["endorser"]: e["title"] for e in detail["endorsements"]}["mallory@example.org"] == EVIL_TITLE
    [listed] = api.get("/api/v1/marketplace/images/").json()["results"]
    assert (listed["title"], listed["kind"]) == ("Ubuntu 24.04 LTS", "machine")
    html = client.get("/marketplace/").content.decode()
    assert "Ubuntu 24.04 LTS" in html and EVIL_TITLE not in html


def test_with_a_kinds_rule_an_endorsement_claiming_another_kind_does_not_count(defaced, api):
    policy_change(actor=None, rules=PolicyRules.from_json({"kinds": ["machine"], "min_endorsements": 1}))
    body = api.get(f"/api/v1/marketplace/images/{IMAGE.identifier}/policy/").json()
    assert body["allowed"] is True
    assert [t.split(" ")[0] for t in body["trusted_endorsers"]] == ["creator@example.org"]
    kinds = next(r for r in body["rules"] if r["rule"] == "kinds")
    assert "not counted: mallory@example.org" in kinds["reason"] and kinds["reason"].endswith("claims disk")
    policy_change(actor=None, rules=PolicyRules.from_json({"kinds": ["machine"], "min_endorsements": 2}))
    assert policy.evaluate(defaced).allowed is False


def test_the_site_endorsement_is_shown_when_the_site_endorses_the_image(defaced, site_key, staff):
    services.image_site_endorse(actor=staff, image=defaced)
    defaced.refresh_from_db()
    assert defaced.title == "Ubuntu 24.04 LTS"  # built from the shown entry, not the newest one
    shown = selectors.image_display_entry(image=defaced)
    assert shown is not None and shown.key_id is None


def test_a_backdated_timeline_does_not_take_the_display(published, outsider, signed, api_as):
    raw = signed("outsider", at=T0 - dt.timedelta(days=300), title=EVIL_TITLE)
    assert post_as(api_as, outsider, raw).status_code == 201
    published.refresh_from_db()
    assert published.title == "Ubuntu 24.04 LTS"


def test_when_the_shown_endorsement_stops_counting_the_next_oldest_is_shown(defaced, owner, keyring):
    services.pgp_key_revoke(actor=owner, fingerprint=keyring["owner"].fingerprint)
    defaced.refresh_from_db()
    assert defaced.title == EVIL_TITLE  # the only current endorsement left; its page marks it as mallory's


def test_with_no_current_endorsement_the_oldest_timelines_latest_entry_is_shown(published, owner, signed, api_as):
    raw = signed("owner", at=T0 + dt.timedelta(hours=1), title="Ubuntu 24.04 (retired)", deprecated="EOL")
    assert post_as(api_as, owner, raw).status_code == 201
    published.refresh_from_db()
    assert published.title == "Ubuntu 24.04 (retired)"


# --- Stored locations ------------------------------------------------------------------------------------------


def test_a_javascript_location_stored_in_an_old_row_is_not_rendered_as_a_link(published, client, staff):
    # Rows stored before the reader refused such schemes: the signed entry is never rewritten, only shown.
    bad = ["javascript:alert(1)", "JavaScript:alert(2)", " javascript:alert(3)", "file:///etc/passwd"]
    Entry.objects.update(locations=[*bad, "https://images.example.org/u.qcow2"])
    entry = Entry.objects.get()
    pages = [
        f"/marketplace/images/{IMAGE.identifier}/",
        f"/marketplace/entries/{IMAGE.identifier}/{entry.endorser.email}/{entry.created_text}/",
    ]
    client.force_login(staff)
    pages.append(f"/marketplace/console/images/{IMAGE.identifier}/")
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        html = response.content.decode().lower()
        assert 'href="javascript' not in html and 'href=" javascript' not in html and 'href="file:' not in html, page
        assert "javascript:alert(1)" in html, page  # shown as text
        assert '<a href="https://images.example.org/u.qcow2" rel="nofollow noopener noreferrer">' in html, page


# --- The migration's backfill ----------------------------------------------------------------------------------


def test_the_backfill_fixes_checksums_from_each_images_oldest_entry_and_reports_disagreements(
    owner, staff, registered, signed, capsys
):
    from django.apps import apps

    registered(owner, "owner")
    registered(staff, "staff")
    services.entry_upload(raw=signed("owner"), uploader=owner)
    services.entry_upload(raw=signed("staff", at=T0 + dt.timedelta(hours=1)), uploader=staff)
    services.entry_upload(raw=signed("owner", content=OTHER_IMAGE.content, title="Debian 12"), uploader=owner)
    # As rows were before: the size followed the newest entry, no checksum was fixed, and an entry disagrees.
    Image.objects.update(checksums={}, sha256="")
    Entry.objects.filter(endorser__email="security@example.org").update(bytes=TERABYTES)
    Image.objects.filter(identifier=IMAGE.identifier).update(bytes=TERABYTES)

    migration = importlib.import_module("marketplace.migrations.0004_image_facts")
    migration.fix_from_oldest_entry(apps, None)

    ubuntu = Image.objects.get(identifier=IMAGE.identifier)
    assert ubuntu.bytes == len(IMAGE.content)
    assert ubuntu.checksums == IMAGE.checksums and ubuntu.sha256 == UBUNTU_SHA256
    assert Image.objects.get(identifier=OTHER_IMAGE.identifier).sha256 == OTHER_IMAGE.checksums["SHA-256"]
    out = capsys.readouterr().out
    assert f"image {IMAGE.identifier}: later entries disagree with the oldest: bytes {TERABYTES}" in out
    assert OTHER_IMAGE.identifier not in out
    assert Entry.objects.count() == 3


def test_the_migration_recomputes_display_columns_that_followed_the_newest_entry(defaced):
    from django.apps import apps

    Image.objects.update(title=EVIL_TITLE, kind="disk")  # as the old "follow the newest entry" rule left them
    importlib.import_module("marketplace.migrations.0004_image_facts").refresh_display(apps, None)
    defaced.refresh_from_db()
    assert (defaced.title, defaced.kind) == ("Ubuntu 24.04 LTS", "machine")
