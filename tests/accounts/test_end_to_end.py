"""The must-show: register → approve → the entry is in slapd → log in with the LDAP password → quotas."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.test import Client

from accounts import directory
from tests.accounts.conftest import ACCESS_GROUP, REGISTRATION_PASSWORD, USERS_OU, group_members, ldap_entry

pytestmark = pytest.mark.django_db


def test_register_approve_find_in_slapd_log_in_with_ldap_password_and_see_quotas(
    ldap_directory, api, staff, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        created = api.post(
            "/api/v1/accounts/registrations/",
            {
                "username": "rosalind",
                "email": "rosalind@example.org",
                "first_name": "Rosalind",
                "last_name": "Franklin",
                "password": REGISTRATION_PASSWORD,
                "dn": "/C=UK/O=Kings College/CN=Rosalind Franklin",
                "message": "Diffraction images.",
                "accept_terms": True,
            },
            format="json",
        )
    assert created.status_code == 201 and created.json()["status"] == "pending"
    [confirmation] = mail.outbox
    link = re.search(r"http://127\.0\.0\.1:8000(/accounts/register/confirm/\S+/)", confirmation.body).group(1)
    applicant = Client()
    assert b"Confirm my e-mail address" in applicant.get(link).content  # a GET confirms nothing
    with django_capture_on_commit_callbacks(execute=True):
        assert b"is confirmed" in applicant.post(link).content
    assert [m.to for m in mail.outbox[1:]] == [["staff@example.org"]]  # now the staff are told
    assert ldap_entry(ldap_directory, "rosalind") is None  # nothing in the directory before approval

    api.force_authenticate(staff)
    approved = api.post(f"/api/v1/admin/registrations/{created.json()['id']}/approve/")
    assert approved.status_code == 200 and approved.json()["status"] == "approved"

    entry = ldap_entry(ldap_directory, "rosalind")
    assert entry is not None
    assert entry["mail"] == ["rosalind@example.org"] and entry["cn"] == ["Rosalind Franklin"]
    assert directory.ssha_check(REGISTRATION_PASSWORD, entry["userPassword"][0])
    assert f"uid=rosalind,{USERS_OU}" in group_members(ldap_directory, ACCESS_GROUP)

    browser = Client()
    login = browser.post("/accounts/login/", {"username": "rosalind", "password": REGISTRATION_PASSWORD})
    assert login.status_code == 302
    me = browser.get("/api/v1/accounts/me/").json()
    assert me["user"]["username"] == "rosalind" and me["user"]["is_staff"] is False
    [project] = me["projects"]
    assert (project["name"], project["role"]) == ("personal-rosalind", "manager")
    defaults = settings.ACCOUNTS_QUOTA_DEFAULTS
    assert project["quotas"] == {r: {"limit": defaults[r], "used": 0} for r in defaults}
