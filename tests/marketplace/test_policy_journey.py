"""The issue's must-show, end to end through the API and the pages: a site that requires its own endorsement."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.marketplace.conftest import IMAGE

pytestmark = pytest.mark.django_db

POLICY_URL = f"/api/v1/marketplace/images/{IMAGE.identifier}/policy/"
IMAGE_PAGE = f"/marketplace/images/{IMAGE.identifier}/"
REVIEW = f"/marketplace/console/images/{IMAGE.identifier}/"
MISSING_SITE = "required_endorsers: 0 of the 1 required from [site] endorse it; missing: site"


def test_site_endorsement_required_denies_then_allows_then_denies_and_warn_mode_allows_with_warning(
    owner, staff, keyring, entry_for, site_key, client
):
    admin_api, creator_api, anyone = APIClient(), APIClient(), APIClient()
    admin_api.force_authenticate(staff)
    creator_api.force_authenticate(owner)
    client.force_login(staff)

    # The site requires its own endorsement.
    put = admin_api.put("/api/v1/admin/policy/", {"required_endorsers": {"k": 1, "of": ["site"]}}, format="json")
    assert put.status_code == 200, put.json()

    # A creator registers a key and uploads a signed entry: the image is denied, with the reason.
    assert creator_api.post("/api/v1/accounts/pgp-keys/", {"armored": keyring["owner"].armored}).status_code == 201
    upload = creator_api.post("/api/v1/marketplace/entries/", entry_for("owner"), content_type="application/xml")
    assert upload.status_code == 201, upload.json()
    decision = anyone.get(POLICY_URL).json()
    assert decision["allowed"] is False and decision["verdict"] == "denied"
    assert decision["summary"] == f"denied (enforce mode): {MISSING_SITE}"
    page = anyone.get(IMAGE_PAGE).content.decode()
    assert 'id="policy-verdict">denied<' in page and "0 of the 1 required from [site] endorse it" in page

    # The admin endorses it in the console with the site key: allowed.
    endorsed = client.post(f"{REVIEW}endorse/", {"reason": "reviewed by the site"}, follow=True)
    assert endorsed.context["decision"].verdict == "allowed"
    decision = anyone.get(POLICY_URL).json()
    assert decision["allowed"] is True and decision["verdict"] == "allowed"
    assert decision["rules"][7] == {
        "rule": "required_endorsers",
        "outcome": "passed",
        "reason": "1 of the 1 required from [site] endorse it",
    }
    assert 'id="policy-verdict">allowed<' in anyone.get(IMAGE_PAGE).content.decode()

    # The site deprecates its endorsement: denied again.
    client.post(f"{REVIEW}deprecate/", {"reason": "kernel CVE-2024-1086"})
    decision = anyone.get(POLICY_URL).json()
    assert decision["allowed"] is False and decision["summary"] == f"denied (enforce mode): {MISSING_SITE}"

    # In warn mode the same image is allowed, and the warning is shown on the API and the page.
    admin_api.put(
        "/api/v1/admin/policy/", {"mode": "warn", "required_endorsers": {"k": 1, "of": ["site"]}}, format="json"
    )
    decision = anyone.get(POLICY_URL).json()
    assert decision["allowed"] is True and decision["verdict"] == "allowed-with-warnings"
    assert decision["summary"] == f"allowed-with-warnings (warn mode): {MISSING_SITE}"
    page = anyone.get(IMAGE_PAGE).content.decode()
    assert 'id="policy-warnings"' in page
    assert "<code>required_endorsers</code>: 0 of the 1 required from [site] endorse it; missing: site" in page
