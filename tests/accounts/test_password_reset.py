"""Password reset by an e-mailed link: local accounts and directory (LDAP) accounts."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import authenticate
from django.core import mail
from rest_framework.throttling import SimpleRateThrottle

from accounts.models import RegistrationRequest
from tests.accounts.conftest import REGISTRATION_PASSWORD, ldap_entry
from tests.factories import TEST_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "Fresh-Granite-Kite-93"


def _reset_link(client, email: str) -> str:
    response = client.post("/accounts/password-reset/", {"email": email})
    assert response.status_code == 302 and response["Location"] == "/accounts/password-reset/sent/"
    assert len(mail.outbox) == 1
    match = re.search(r"http://testserver(/accounts/password-reset/[^/\s]+/[^/\s]+/)", mail.outbox[0].body)
    assert match, mail.outbox[0].body
    return match.group(1)


def _choose(client, link: str, password: str):
    form_page = client.get(link, follow=True)  # Django swaps the token into the session, then redirects
    assert form_page.context["validlink"]
    return client.post(form_page.redirect_chain[-1][0], {"new_password1": password, "new_password2": password})


def test_a_local_user_resets_the_password_through_the_mailed_link(client, owner):
    link = _reset_link(client, "owner@example.org")
    assert mail.outbox[0].to == ["owner@example.org"]
    response = _choose(client, link, NEW_PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/accounts/password-reset/done/"
    assert authenticate(username="owner", password=NEW_PASSWORD) == owner
    assert authenticate(username="owner", password=TEST_PASSWORD) is None
    # The link works once.
    assert not client.get(link, follow=True).context["validlink"]


def test_an_unknown_address_gets_the_same_answer_and_no_mail(client):
    response = client.post("/accounts/password-reset/", {"email": "nobody@example.org"})
    assert response.status_code == 302
    assert mail.outbox == []


def test_a_weak_new_password_is_refused(client, owner):
    link = _reset_link(client, "owner@example.org")
    response = _choose(client, link, "123")
    assert response.status_code == 200
    assert b"too short" in response.content
    assert authenticate(username="owner", password=TEST_PASSWORD) == owner


def test_a_directory_user_resets_the_password_in_ldap(ldap_directory, register, api, staff, client):
    from accounts import directory

    register()
    api.force_authenticate(staff)
    api.post(f"/api/v1/admin/registrations/{RegistrationRequest.objects.get().pk}/approve/")
    mail.outbox.clear()
    link = _reset_link(client, "ada@example.org")
    response = _choose(client, link, NEW_PASSWORD)
    assert response.status_code == 302
    [stored] = ldap_entry(ldap_directory, "ada_l")["userPassword"]
    assert directory.ssha_check(NEW_PASSWORD, stored)
    assert client.login(username="ada_l", password=NEW_PASSWORD)
    assert not client.login(username="ada_l", password=REGISTRATION_PASSWORD)
    assert not client.get(link, follow=True).context["validlink"]


def test_reset_mails_from_one_client_address_are_rate_limited(client, owner, monkeypatch):
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "password_reset", "2/hour")
    for _ in range(2):
        assert client.post("/accounts/password-reset/", {"email": "owner@example.org"}).status_code == 302
    refused = client.post("/accounts/password-reset/", {"email": "owner@example.org"})
    assert refused.status_code == 429
    assert b"Too many password resets from your address" in refused.content
    assert len(mail.outbox) == 2


def test_reset_mails_to_one_account_are_capped_whoever_asks_and_the_answer_does_not_tell(client, owner, monkeypatch):
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "password_reset_account", "2/hour")
    answers = [
        client.post("/accounts/password-reset/", {"email": "OWNER@example.org"}, REMOTE_ADDR=f"192.0.2.{n}")
        for n in range(30)
    ]
    assert {(a.status_code, a["Location"]) for a in answers} == {(302, "/accounts/password-reset/sent/")}
    assert len(mail.outbox) == 2
    # Other accounts are not held back by it.
    UserFactory(username="other")
    client.post("/accounts/password-reset/", {"email": "other@example.org"}, REMOTE_ADDR="198.51.100.1")
    assert mail.outbox[-1].to == ["other@example.org"]
