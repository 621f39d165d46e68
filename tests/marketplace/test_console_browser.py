"""The admin's console journey in a real browser: review a denied image, endorse it with the site key."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from marketplace import services
from marketplace.policy import PolicyRules
from marketplace.policy.services import policy_change
from tests.factories import TEST_PASSWORD
from tests.marketplace.conftest import IMAGE

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_admin_reviews_a_denied_image_endorses_it_and_sees_it_allowed(
    page, owner, staff, registered, entry_for, site_key
):
    registered(owner, "owner")
    services.entry_upload(raw=entry_for("owner"), uploader=owner)
    policy_change(actor=staff, rules=PolicyRules.from_json({"required_endorsers": {"k": 1, "of": ["site"]}}))

    page.goto("/accounts/login/?next=/marketplace/")
    page.get_by_label("Username").fill("staff")
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/marketplace/")

    page.get_by_role("link", name="Console", exact=True).click()
    page.get_by_role("navigation", name="Admin console").get_by_role("link", name="Images").click()
    page.get_by_label("Show").select_option("denied")
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("link", name="Ubuntu 24.04 LTS").click()
    page.wait_for_url(f"**/marketplace/console/images/{IMAGE.identifier}/")
    assert page.locator("#policy-verdict").inner_text() == "denied"
    assert page.locator('tr[data-rule="required_endorsers"]').get_by_text("missing: site").is_visible()

    page.get_by_role("button", name="Endorse with the site key").click()
    expect(page.get_by_text(f"{IMAGE.identifier} is endorsed with the site key.")).to_be_visible()
    expect(page.locator("#policy-verdict")).to_have_text("allowed")
    assert page.locator('tr[data-rule="required_endorsers"] .badge').inner_text() == "passed"
    assert page.locator("#site-endorsement .badge").inner_text() == "valid"

    page.get_by_label("Reason").fill("kernel CVE")
    page.get_by_role("button", name="Deprecate the site's endorsement").click()
    expect(page.get_by_text("The site's endorsement of")).to_be_visible()
    expect(page.locator("#policy-verdict")).to_have_text("denied")
    assert page.locator("#site-endorsement").get_by_text("kernel CVE").is_visible()
