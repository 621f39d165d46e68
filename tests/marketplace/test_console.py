"""The staff console: images by verdict, the review page and its actions, the policy form with its dry run,
and the site key page."""

from __future__ import annotations

import json

import pytest

from core.models import AuditEntry
from marketplace import services
from marketplace.models import Entry, PgpKey, SitePolicy
from marketplace.policy import PolicyRules
from marketplace.policy.services import policy_change
from tests.marketplace.conftest import IMAGE, OTHER_IMAGE, SITE_EMAIL, T0

pytestmark = pytest.mark.django_db

CONSOLE = "/marketplace/console/"
REVIEW = f"/marketplace/console/images/{IMAGE.identifier}/"
POLICY_PAGE = "/marketplace/console/policy/"


@pytest.fixture
def images(owner, registered, entry_for):
    registered(owner, "owner")
    services.entry_upload(raw=entry_for("owner"), uploader=owner)
    services.entry_upload(
        raw=entry_for("owner", image=OTHER_IMAGE, title="Debian 12", os="Debian", at=T0), uploader=owner
    )


@pytest.fixture
def as_staff(client, staff):
    client.force_login(staff)
    return client


def listed(response) -> dict[str, str]:
    return {row["image"].identifier: row["decision"].verdict for row in response.context["page"]}


def test_console_lists_images_with_their_verdicts_and_filters_them(as_staff, images, staff):
    policy_change(actor=staff, rules=PolicyRules.from_json({"os": ["ubuntu"]}))
    assert listed(as_staff.get(CONSOLE)) == {IMAGE.identifier: "allowed", OTHER_IMAGE.identifier: "denied"}
    assert listed(as_staff.get(CONSOLE, {"verdict": "denied"})) == {OTHER_IMAGE.identifier: "denied"}
    assert listed(as_staff.get(CONSOLE, {"verdict": "warnings"})) == {}

    policy_change(actor=staff, rules=PolicyRules.from_json({"os": ["ubuntu"], "mode": "warn"}))
    response = as_staff.get(CONSOLE, {"verdict": "warnings"})
    assert listed(response) == {OTHER_IMAGE.identifier: "allowed-with-warnings"}
    assert "OS Debian is not one of ubuntu" in response.content.decode()


def test_console_pages_the_unfiltered_list_evaluating_each_page(as_staff, images, monkeypatch):
    monkeypatch.setattr("marketplace.views.PAGE_SIZE", 1)
    first = listed(as_staff.get(CONSOLE))
    second = listed(as_staff.get(CONSOLE, {"page": 2}))
    assert len(first) == len(second) == 1
    assert first | second == {IMAGE.identifier: "allowed", OTHER_IMAGE.identifier: "allowed"}


def test_review_page_shows_metadata_timelines_and_the_decision(as_staff, images, owner, entry_for):
    services.entry_upload(raw=entry_for("owner", at=T0.replace(day=2), deprecated="superseded"), uploader=owner)
    response = as_staff.get(REVIEW)
    assert response.status_code == 200
    page = response.content.decode()
    assert response.context["decision"].verdict == "denied"
    assert 'id="policy-verdict">denied<' in page
    assert "Deprecated: superseded" in page
    ((endorser, entries),) = response.context["timelines"]
    assert endorser.email == "creator@example.org" and [e.status_now for e in entries] == ["deprecated", "valid"]
    assert "The site has no key yet" in page


def test_review_of_a_missing_image_is_404(as_staff, db):
    assert as_staff.get("/marketplace/console/images/AAAAAAAAAAAAAAAAAAAAAAAAAAA/").status_code == 404


def test_console_endorse_and_deprecate_sign_with_the_site_key(as_staff, images, site_key, staff):
    response = as_staff.post(f"{REVIEW}endorse/", {"reason": "looked at it"}, follow=True)
    assert "is endorsed with the site key" in response.content.decode()
    assert response.context["site_latest"].status_now == "valid"

    empty = as_staff.post(f"{REVIEW}deprecate/", {"reason": ""})
    assert empty.status_code == 400 and "This field is required." in empty.content.decode()

    response = as_staff.post(f"{REVIEW}deprecate/", {"reason": "unpatched sshd"}, follow=True)
    assert "is deprecated" in response.content.decode()
    site = Entry.objects.get(endorser__email=SITE_EMAIL, is_latest=True)
    assert site.deprecated_reason == "unpatched sshd"
    actions = list(
        AuditEntry.objects.filter(actor=staff, action__startswith="marketplace.site.").values_list("action", flat=True)
    )
    assert sorted(actions) == ["marketplace.site.deprecated", "marketplace.site.endorsed"]


def test_console_endorse_without_a_site_key_says_what_to_do(as_staff, images, site_settings):
    response = as_staff.post(f"{REVIEW}endorse/", {}, follow=True)
    assert "run `manage.py create_site_key`" in response.content.decode()
    assert not Entry.objects.filter(endorser__email=SITE_EMAIL).exists()


def test_console_revokes_an_endorsers_key_and_returns_to_the_review(as_staff, images, keyring, staff):
    fingerprint = keyring["owner"].fingerprint
    page = as_staff.get(REVIEW).content.decode()
    assert f"Revoke key {fingerprint[-16:]}" in page

    response = as_staff.post(
        f"/marketplace/console/keys/{fingerprint}/revoke/", {"identifier": IMAGE.identifier}, follow=True
    )
    assert response.redirect_chain[-1][0] == REVIEW
    assert f"Key {fingerprint} (owner) revoked." in response.content.decode()
    assert response.context["decision"].verdict == "denied"
    assert PgpKey.objects.get().revoked_by == staff
    assert AuditEntry.objects.filter(action="marketplace.pgp_key.revoked", actor=staff).exists()


def test_console_revoke_never_redirects_elsewhere(as_staff, images, keyring):
    response = as_staff.post(
        f"/marketplace/console/keys/{keyring['owner'].fingerprint}/revoke/", {"identifier": "//evil.example/"}
    )
    assert response["Location"] == CONSOLE


def policy_form(**overrides) -> dict:
    data = {
        "mode": "enforce",
        "min_endorsements": "1",
        "required_k": "",
        "required_of": "",
        "endorsers_allow": "",
        "endorsers_deny": "",
        "images_allow": "",
        "images_deny": "",
        "checksums_allow": "",
        "checksums_deny": "",
        "kinds": "",
        "os": "",
        "arch": "",
        "formats": "",
        "max_bytes": "",
        "note": "",
    }
    return {**data, **overrides}


def test_policy_form_shows_the_dry_run_first_and_changes_on_confirm(as_staff, images, staff, keyring):
    response = as_staff.post(POLICY_PAGE, policy_form(os="Ubuntu, centos", note="only what we patch"))
    assert response.status_code == 200
    preview = response.context["preview"]
    assert [(c.identifier, c.reason) for c in preview["result"].newly_denied] == [
        (
            OTHER_IMAGE.identifier,
            "min_endorsements: 0 current endorsements, 1 required (1 not counted: claims outside the kind, OS, "
            "arch or format rules); os: OS Debian is not one of ubuntu, centos (claimed by creator@example.org ("
            f"{keyring['owner'].fingerprint[-16:]}))",
        )
    ]
    assert "Debian 12" in response.content.decode()
    assert not SitePolicy.objects.exists()

    as_staff.post(
        "/marketplace/console/policy/confirm/",
        {"rules": preview["rules_json"], "based_on": preview["based_on"], "note": preview["note"]},
    )
    active = SitePolicy.objects.get(is_active=True)
    assert active.rules["os"] == ["ubuntu", "centos"] and active.note == "only what we patch"
    audit = AuditEntry.objects.get(action="marketplace.policy.changed")
    assert audit.actor == staff and audit.details["source"] == "console"


def test_policy_form_reports_each_bad_field_next_to_it(as_staff, db):
    response = as_staff.post(
        POLICY_PAGE,
        policy_form(required_k="2", required_of="site", checksums_deny="not-a-digest", endorsers_allow="bob"),
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert "between 1 and 1" in errors["required_of"][0]
    assert "is not a SHA-1" in errors["checksums_deny"][0]
    assert "neither a 40-hex key fingerprint" in errors["endorsers_allow"][0]
    assert response.context["preview"] is None
    assert not SitePolicy.objects.exists()


def test_policy_form_starts_from_the_active_policy(as_staff, staff):
    policy_change(
        actor=staff, rules=PolicyRules.from_json({"required_endorsers": {"k": 1, "of": ["site", "a@example.org"]}})
    )
    form = as_staff.get(POLICY_PAGE).context["form"]
    assert form.initial["required_k"] == 1 and form.initial["required_of"] == "site\na@example.org"


def test_a_stale_dry_run_cannot_be_confirmed(as_staff, images, staff):
    preview = as_staff.post(POLICY_PAGE, policy_form(min_endorsements="2")).context["preview"]
    policy_change(actor=staff, rules=PolicyRules.from_json({"os": ["ubuntu"]}))  # someone else, meanwhile

    response = as_staff.post(
        "/marketplace/console/policy/confirm/",
        {"rules": preview["rules_json"], "based_on": preview["based_on"]},
        follow=True,
    )
    assert "changed by someone else since this dry run" in response.content.decode()
    assert SitePolicy.objects.get(is_active=True).rules["os"] == ["ubuntu"]


def test_a_tampered_confirmation_is_refused(as_staff, db):
    response = as_staff.post(
        "/marketplace/console/policy/confirm/", {"rules": json.dumps({"mode": "yolo"}), "based_on": "0"}, follow=True
    )
    assert "The policy is not valid: mode must be one of" in response.content.decode()
    response = as_staff.post("/marketplace/console/policy/confirm/", {"rules": "{", "based_on": "0"}, follow=True)
    assert "did not carry a policy" in response.content.decode()
    assert not SitePolicy.objects.exists()


def test_site_key_page_shows_the_fingerprint_and_public_key(as_staff, site_key):
    page = as_staff.get("/marketplace/console/site-key/").content.decode()
    assert site_key.fingerprint in page and "-----BEGIN PGP PUBLIC KEY BLOCK-----" in page


def test_site_key_page_before_the_key_exists_says_how_to_make_it(as_staff, db):
    assert "manage.py create_site_key" in as_staff.get("/marketplace/console/site-key/").content.decode()


def test_staff_see_the_console_in_the_navigation_and_others_do_not(client, staff, owner):
    client.force_login(owner)
    assert 'href="/console/">Console' not in client.get("/marketplace/").content.decode()
    client.force_login(staff)
    assert 'href="/console/">Console' in client.get("/marketplace/").content.decode()
    assert 'href="/marketplace/console/">Images' in client.get("/console/hosts/").content.decode()
