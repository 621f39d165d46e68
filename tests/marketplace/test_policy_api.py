"""The policy over the API: an image's decision, the admin policy (GET/PUT), its dry run, and the site's
endorsements."""

from __future__ import annotations

import datetime as dt

import pytest

from core.models import AuditEntry
from marketplace import services
from marketplace.models import Entry, SitePolicy
from marketplace.policy import PolicyRules
from marketplace.policy.services import policy_change
from tests.marketplace.conftest import IMAGE, OTHER_IMAGE, SITE_EMAIL, T0

pytestmark = pytest.mark.django_db

POLICY = "/api/v1/admin/policy/"
DRY_RUN = "/api/v1/admin/policy/dry-run/"


@pytest.fixture
def images(owner, registered, entry_for):
    """Two images by the creator: Ubuntu (qcow2) and Debian (raw, 5 GB, no location)."""
    registered(owner, "owner")
    services.entry_upload(raw=entry_for("owner"), uploader=owner)
    services.entry_upload(
        raw=entry_for("owner", image=OTHER_IMAGE, title="Debian 12", os="Debian", format="raw", locations=(), at=T0),
        uploader=owner,
    )


def test_image_policy_answers_the_decision_rule_by_rule(api, images):
    body = api.get(f"/api/v1/marketplace/images/{IMAGE.identifier}/policy/").json()
    assert body["identifier"] == IMAGE.identifier
    assert body["allowed"] is True and body["verdict"] == "allowed" and body["mode"] == "enforce"
    assert len(body["rules"]) == 14
    assert body["rules"][6] == {
        "rule": "min_endorsements",
        "outcome": "passed",
        "reason": "1 current endorsement, 1 required",
    }


def test_image_policy_of_a_missing_image_is_404(api, db):
    response = api.get("/api/v1/marketplace/images/AAAAAAAAAAAAAAAAAAAAAAAAAAA/policy/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_admin_reads_the_default_policy_before_any_is_set(api_as, staff):
    body = api_as(staff).get(POLICY).json()
    assert body == {"id": None, "created": None, "created_by": None, "note": "", **PolicyRules().to_json()}


def test_admin_replaces_the_policy_and_the_old_one_stays_in_history(api_as, staff):
    client = api_as(staff)
    first = client.put(POLICY, {"min_endorsements": 2, "note": "two eyes"}, format="json")
    assert first.status_code == 200, first.json()
    second = client.put(POLICY, {**first.json(), "os": ["Ubuntu", "debian"]}, format="json")  # GET/PUT round trip

    body = second.json()
    assert body["os"] == ["ubuntu", "debian"] and body["min_endorsements"] == 2
    assert body["created_by"] == "staff" and body["id"] != first.json()["id"]
    assert list(SitePolicy.objects.order_by("id").values_list("is_active", flat=True)) == [False, True]
    audit = AuditEntry.objects.filter(action="marketplace.policy.changed").order_by("id").last()
    assert audit.actor == staff
    assert audit.details["old"]["os"] == [] and audit.details["new"]["os"] == ["ubuntu", "debian"]
    assert client.get(POLICY).json() == body


def test_putting_the_same_rules_again_changes_nothing(api_as, staff):
    client = api_as(staff)
    first = client.put(POLICY, {"min_endorsements": 2}, format="json").json()
    again = client.put(POLICY, {"min_endorsements": 2}, format="json")
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    assert SitePolicy.objects.count() == 1
    assert AuditEntry.objects.filter(action="marketplace.policy.changed").count() == 1


def test_an_invalid_policy_names_every_bad_field_and_changes_nothing(api_as, staff):
    client = api_as(staff)
    client.put(POLICY, {"min_endorsements": 2}, format="json")
    response = client.put(
        POLICY,
        {
            "mode": "strict",
            "min_endorsements": -1,
            "endorsers_allow": ["not an endorser"],
            "checksums_deny": ["abc"],
            "required_endorsers": {"k": 3, "of": ["site"]},
            "max_bytes": "big",
            "colour": "blue",
        },
        format="json",
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "policy-invalid"
    assert set(body["errors"]) == {
        "mode",
        "min_endorsements",
        "endorsers_allow",
        "checksums_deny",
        "required_endorsers",
        "max_bytes",
        "colour",
    }
    assert "between 1 and 1" in body["errors"]["required_endorsers"]
    assert SitePolicy.objects.get().rules["min_endorsements"] == 2
    assert AuditEntry.objects.filter(action="marketplace.policy.changed").count() == 1


def test_a_body_that_is_not_an_object_is_refused(api_as, staff):
    response = api_as(staff).put(POLICY, ["mode"], format="json")
    assert response.status_code == 400 and response.json()["code"] == "policy-invalid"


def test_dry_run_lists_images_newly_denied_with_reasons_and_changes_nothing(api_as, staff, images, keyring):
    response = api_as(staff).post(DRY_RUN, {"formats": ["qcow2"], "require_location": True}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["evaluated"] == 2 and body["denied_before"] == 0 and body["denied_after"] == 1
    assert body["newly_allowed"] == [] and body["active_policy"] is None
    assert body["newly_denied"] == [
        {
            "identifier": OTHER_IMAGE.identifier,
            "title": "Debian 12",
            # The creator's endorsement claims raw: it does not count, so the minimum fails too.
            "reason": "min_endorsements: 0 current endorsements, 1 required (1 not counted: claims outside the "
            "kind, OS, arch or format rules); formats: format raw is not one of qcow2 (claimed by "
            f"creator@example.org ({keyring['owner'].fingerprint[-16:]})); "
            "require_location: no trusted current endorsement gives a location to download it from",
            "running": 0,
        }
    ]
    assert body["running_touched"] == 0
    assert not SitePolicy.objects.exists()


def test_dry_run_lists_images_newly_allowed_with_what_denied_them(api_as, staff, images, keyring):
    policy_change(actor=staff, rules=PolicyRules.from_json({"os": ["ubuntu"]}))
    body = api_as(staff).post(DRY_RUN, {"os": ["ubuntu"], "mode": "warn"}, format="json").json()
    failed = (
        "min_endorsements: 0 current endorsements, 1 required (1 not counted: claims outside the kind, OS, arch or "
        "format rules); os: OS Debian is not one of ubuntu (claimed by creator@example.org "
        f"({keyring['owner'].fingerprint[-16:]}))"
    )
    assert body["newly_denied"] == []
    assert body["newly_allowed"] == [
        {
            "identifier": OTHER_IMAGE.identifier,
            "title": "Debian 12",
            "reason": f"was denied by {failed}; now allowed in warn mode despite {failed}",
            "running": 0,
        }
    ]


def test_dry_run_of_an_invalid_policy_is_400(api_as, staff):
    response = api_as(staff).post(DRY_RUN, {"kinds": "machine"}, format="json")
    assert response.status_code == 400 and response.json()["errors"] == {"kinds": "kinds must be a list of strings"}


def test_admin_endorses_and_deprecates_through_the_api(api_as, staff, images, site_key):
    client = api_as(staff)
    url = f"/api/v1/admin/images/{IMAGE.identifier}/"
    endorsed = client.post(f"{url}endorse/", {"reason": "reviewed"}, format="json")
    assert endorsed.status_code == 201, endorsed.json()
    assert endorsed.json()["endorser"] == SITE_EMAIL and endorsed.json()["status"] == "valid"
    assert endorsed["Location"] == endorsed.json()["url"]

    missing_reason = client.post(f"{url}deprecate/", {}, format="json")
    assert missing_reason.status_code == 400 and missing_reason.json()["detail"].startswith("reason:")

    deprecated = client.post(f"{url}deprecate/", {"reason": "kernel CVE"}, format="json")
    assert deprecated.status_code == 201
    assert deprecated.json()["status"] == "deprecated" and deprecated.json()["deprecated_reason"] == "kernel CVE"

    again = client.post(f"{url}deprecate/", {"reason": "still bad"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "site-not-endorsing"


def test_endorse_with_an_idempotency_key_makes_one_entry(api_as, staff, images, site_key):
    client = api_as(staff)
    url = f"/api/v1/admin/images/{IMAGE.identifier}/endorse/"
    first = client.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="endorse-1")
    second = client.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="endorse-1")
    assert first.status_code == second.status_code == 201
    assert second["Idempotent-Replayed"] == "true" and second.json() == first.json()
    assert Entry.objects.filter(endorser__email=SITE_EMAIL).count() == 1


def test_endorse_a_missing_image_is_404_and_without_a_site_key_409(api_as, staff, images, site_settings):
    client = api_as(staff)
    assert (
        client.post("/api/v1/admin/images/AAAAAAAAAAAAAAAAAAAAAAAAAAA/endorse/", {}, format="json").status_code == 404
    )
    response = client.post(f"/api/v1/admin/images/{IMAGE.identifier}/endorse/", {}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "site-key-missing"


def test_endorse_refuses_a_past_expiry(api_as, staff, images, site_key):
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    response = api_as(staff).post(
        f"/api/v1/admin/images/{IMAGE.identifier}/endorse/", {"valid_until": past}, format="json"
    )
    assert response.status_code == 400 and response.json()["code"] == "valid-until-past"
    assert not Entry.objects.filter(endorser__email=SITE_EMAIL).exists()
