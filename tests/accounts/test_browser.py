"""Registration, approval in the console, login and the profile in a real browser (LDAP on)."""

from __future__ import annotations

import re

import pytest
from django.core import mail

from tests.accounts.conftest import REGISTRATION_PASSWORD
from tests.factories import TEST_PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_register_then_staff_approves_then_the_user_sees_quotas_on_the_profile(
    ldap_directory, browser, live_server, staff, settings
):
    settings.ACCOUNTS_QUOTA_DEFAULTS = {**settings.ACCOUNTS_QUOTA_DEFAULTS, "vcpus": 12}
    applicant = browser.new_context(base_url=live_server.url).new_page()
    applicant.goto("/accounts/login/")
    applicant.locator("main").get_by_role("link", name="Register").click()
    applicant.get_by_label("Username").fill("marie")
    applicant.get_by_label("E-mail").fill("marie@example.org")
    applicant.get_by_label("Given name").fill("Marie")
    applicant.get_by_label("Family name").fill("Curie")
    applicant.get_by_label("Password", exact=True).fill(REGISTRATION_PASSWORD)
    applicant.get_by_label("Password (again)").fill(REGISTRATION_PASSWORD)
    applicant.get_by_label("I accept the terms of use").check()
    applicant.get_by_role("button", name="Send the request").click()
    applicant.wait_for_url("**/accounts/register/done/")
    assert applicant.get_by_role("heading", name="Registration sent").is_visible()
    [confirmation] = mail.outbox
    link = re.search(r"http://127\.0\.0\.1:8000(/accounts/register/confirm/\S+/)", confirmation.body).group(1)
    applicant.goto(link)
    applicant.get_by_role("button", name="Confirm my e-mail address").click()
    assert applicant.get_by_text("marie@example.org is confirmed").is_visible()

    admin = browser.new_context(base_url=live_server.url).new_page()
    admin.goto("/accounts/login/")
    admin.get_by_label("Username").fill("staff")
    admin.get_by_label("Password").fill(TEST_PASSWORD)
    admin.get_by_role("button", name="Log in").click()
    admin.wait_for_url("**/")
    admin.get_by_role("link", name="Console", exact=True).click()
    admin.get_by_role("link", name="Registrations").click()
    admin.get_by_role("button", name="Approve marie").click()
    assert admin.get_by_text("marie is approved").is_visible()

    applicant.goto("/accounts/login/")
    applicant.get_by_label("Username").fill("marie")
    applicant.get_by_label("Password").fill(REGISTRATION_PASSWORD)
    applicant.get_by_role("button", name="Log in").click()
    applicant.wait_for_url("**/")
    applicant.get_by_role("link", name="Profile").click()
    vcpus = applicant.locator('table[data-project="personal-marie"] tr[data-resource="vcpus"] td')
    assert vcpus.all_inner_texts() == ["vCPU", "0", "12", "12"]
