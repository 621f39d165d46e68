"""Registration requests, their validation, staff decisions without LDAP (local accounts), e-mails."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import time_machine
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core import mail
from rest_framework.throttling import SimpleRateThrottle

from accounts.models import Membership, Project, RegistrationRequest
from core.models import AuditEntry
from tests.accounts.conftest import REGISTRATION_PASSWORD, registration_body
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_anonymous_registration_creates_a_pending_request(register):
    response = register()
    assert response.status_code == 201
    registration = RegistrationRequest.objects.get()
    assert response.json() == {"id": registration.pk, "status": "pending"}
    assert (registration.username, registration.email, registration.first_name, registration.last_name) == (
        "ada_l",
        "ada@example.org",
        "Ada",
        "Lovelace",
    )
    assert AuditEntry.objects.filter(action="accounts.registration.submitted").count() == 1
    assert not User.objects.filter(username="ada_l").exists()


def test_the_password_is_kept_only_hashed(register):
    register()
    registration = RegistrationRequest.objects.get()
    stored = [str(value) for value in registration.__dict__.values()]
    assert not any(REGISTRATION_PASSWORD in value for value in stored)
    assert registration.ldap_password_hash.startswith("{SSHA}")
    assert registration.password_hash and registration.password_hash != REGISTRATION_PASSWORD


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"username": "ab"}, "username", "3 to 20"),
        ({"username": "a" * 21}, "username", "20"),
        ({"username": "bad-name"}, "username", "3 to 20"),
        ({"username": "with space"}, "username", "3 to 20"),
        ({"email": "not-an-address"}, "email", "valid"),
        ({"first_name": ""}, "first_name", ""),
        ({"last_name": "   "}, "last_name", "blank"),
        ({"password": "short"}, "password", "too short"),
        ({"password": "password123"}, "password", "too common"),
        ({"password": "ada_lovelace_l"}, "password", "too similar"),
        ({"dn": "this is not a DN"}, "dn", "distinguished name"),
        ({"accept_terms": False}, "accept_terms", "accept the terms"),
    ],
)
def test_invalid_registration_is_refused_naming_the_field(register, overrides, field, words):
    response = register(**overrides)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] in {"invalid", "blank", "max_length", "required"}
    assert body["detail"].startswith(f"{field}: ")
    assert words.lower() in body["detail"].lower()
    assert field in body["errors"]
    assert not RegistrationRequest.objects.exists()


def test_missing_accept_terms_is_refused(api):
    body = registration_body()
    del body["accept_terms"]
    response = api.post("/api/v1/accounts/registrations/", body, format="json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("accept_terms: ")


def test_username_taken_by_a_user_is_refused_whatever_its_case(register):
    UserFactory(username="Ada_L")
    response = register()
    assert response.status_code == 400
    assert response.json()["detail"] == "username: this username is already taken"


def test_username_of_a_pending_request_is_refused(register):
    assert register().status_code == 201
    response = register(email="other@example.org")
    assert response.status_code == 400
    assert response.json()["detail"] == "username: this username is already taken"
    assert RegistrationRequest.objects.count() == 1


def test_username_of_a_rejected_request_may_be_asked_again(register, staff, api):
    register()
    registration = RegistrationRequest.objects.get()
    api.force_authenticate(staff)
    api.post(f"/api/v1/admin/registrations/{registration.pk}/reject/", {"reason": "typo"}, format="json")
    api.force_authenticate(None)
    assert register().status_code == 201


def test_x509_dn_in_openssl_form_is_stored_as_rfc4514(register):
    register(dn="/DC=org/DC=example/O=Example/CN=Ada Lovelace")
    assert RegistrationRequest.objects.get().dn == "CN=Ada Lovelace,O=Example,DC=example,DC=org"


def _confirmation_link(message) -> str:
    match = re.search(r"http://127\.0\.0\.1:8000(/accounts/register/confirm/[^/\s]+/)", message.body)
    assert match, message.body
    return match.group(1)


def test_registration_mails_the_applicant_a_link_and_the_staff_only_once_it_is_confirmed(
    register, staff, client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        register(confirmed=False)
    [to_applicant] = mail.outbox
    assert to_applicant.to == ["ada@example.org"]
    assert REGISTRATION_PASSWORD not in to_applicant.body
    link = _confirmation_link(to_applicant)
    page = client.get(link)  # what a mail scanner does: it confirms nothing
    assert page.status_code == 200 and b"Confirm my e-mail address" in page.content
    assert b"<nav" in page.content  # in the site's layout
    assert RegistrationRequest.objects.get().email_confirmed is None
    with django_capture_on_commit_callbacks(execute=True):
        confirmed = client.post(link)
    assert confirmed.status_code == 200 and b"is confirmed" in confirmed.content
    assert RegistrationRequest.objects.get().email_confirmed is not None
    to_staff = mail.outbox[1]
    assert to_staff.to == ["staff@example.org"]
    assert "ada_l" in to_staff.subject
    assert "/accounts/console/registrations/" in to_staff.body
    assert REGISTRATION_PASSWORD not in to_staff.body
    assert AuditEntry.objects.filter(action="accounts.registration.email_confirmed").count() == 1


def test_confirming_twice_changes_nothing_more(register, staff, client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        register(confirmed=False)
    link = _confirmation_link(mail.outbox[0])
    with django_capture_on_commit_callbacks(execute=True):
        client.post(link)
    first = RegistrationRequest.objects.get().email_confirmed
    with django_capture_on_commit_callbacks(execute=True):
        again = client.post(link)
    assert again.status_code == 200 and b"is confirmed" in again.content
    assert RegistrationRequest.objects.get().email_confirmed == first
    assert len(mail.outbox) == 2  # one to the applicant, one to the staff
    assert AuditEntry.objects.filter(action="accounts.registration.email_confirmed").count() == 1


def test_an_expired_confirmation_link_is_refused(register, client, settings, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        register(confirmed=False)
    link = _confirmation_link(mail.outbox[0])
    later = dt.datetime.now(tz=dt.UTC) + dt.timedelta(hours=settings.EMAIL_CONFIRMATION_HOURS, minutes=1)
    with time_machine.travel(later):
        response = client.post(link)
    assert response.status_code == 400 and b"expired" in response.content
    assert RegistrationRequest.objects.get().email_confirmed is None


@pytest.mark.parametrize("tamper", [lambda t: t[:-2] + "xx", lambda t: "forged:" + t])
def test_a_forged_confirmation_link_is_refused(register, client, tamper, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        register(confirmed=False)
    token = _confirmation_link(mail.outbox[0]).split("/")[-2]
    response = client.post(f"/accounts/register/confirm/{tamper(token)}/")
    assert response.status_code == 400 and b"not valid" in response.content
    assert RegistrationRequest.objects.get().email_confirmed is None


def test_approving_an_unconfirmed_request_is_refused_in_the_api_and_the_console(register, api, client, staff):
    register(confirmed=False)
    registration = RegistrationRequest.objects.get()
    api.force_authenticate(staff)
    response = api.post(f"/api/v1/admin/registrations/{registration.pk}/approve/")
    assert response.status_code == 409
    assert response.json()["code"] == "email-unconfirmed"
    client.force_login(staff)
    page = client.post(f"/accounts/console/registrations/{registration.pk}/approve/", follow=True)
    assert b"ada_l was not approved" in page.content and b"not confirmed yet" in page.content
    registration.refresh_from_db()
    assert registration.status == "pending" and registration.password_hash
    assert not User.objects.filter(username="ada_l").exists()


def test_the_console_and_the_admin_api_show_whether_the_address_is_confirmed(register, api, client, staff):
    register(confirmed=False)
    register(username="grace", email="grace@example.org")
    api.force_authenticate(staff)
    listed = {r["username"]: r["email_confirmed"] for r in api.get("/api/v1/admin/registrations/").json()["results"]}
    assert listed["ada_l"] is None and listed["grace"] is not None
    client.force_login(staff)
    html = client.get("/accounts/console/registrations/").content.decode()
    assert re.search(r'data-username="ada_l">.*?not confirmed yet', html, re.S)
    assert re.search(r'data-username="grace">.*?<td class="email-confirmed">confirmed ', html, re.S)


def test_asking_for_the_link_again_answers_the_same_whatever_the_address(
    register, api, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        register(confirmed=False)
    mail.outbox.clear()
    answers = []
    for address in ("ADA@example.org", "nobody@example.org"):
        with django_capture_on_commit_callbacks(execute=True):
            answers.append(api.post("/api/v1/accounts/registrations/confirmation/", {"email": address}))
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].json() == answers[1].json()
    [again] = mail.outbox
    assert again.to == ["ada@example.org"]
    assert RegistrationRequest.objects.get().email_confirmed is None


def test_asking_for_the_link_again_is_rate_limited_with_registrations(api, client, monkeypatch):
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "registration", "2/hour")
    for _ in range(2):
        assert api.post("/api/v1/accounts/registrations/confirmation/", {"email": "a@example.org"}).status_code == 202
    refused = api.post("/api/v1/accounts/registrations/confirmation/", {"email": "a@example.org"})
    assert refused.status_code == 429
    page = client.post("/accounts/register/confirm/", {"email": "a@example.org"})
    assert page.status_code == 429 and b"Too many requests" in page.content


def test_the_page_sends_the_link_again(register, client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        register(confirmed=False)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/accounts/register/confirm/", {"email": "ada@example.org"}, follow=True)
    assert b"we have sent the link again" in response.content
    assert len(mail.outbox) == 2 and "/accounts/register/confirm/" in mail.outbox[1].body


def test_staff_lists_pending_registrations(register, api, staff):
    register()
    register(username="grace", email="grace@example.org", first_name="Grace", last_name="Hopper")
    api.force_authenticate(staff)
    body = api.get("/api/v1/admin/registrations/", {"status": "pending"}).json()
    assert [r["username"] for r in body["results"]] == ["ada_l", "grace"]
    assert "password_hash" not in body["results"][0] and "ldap_password_hash" not in body["results"][0]
    assert api.get("/api/v1/admin/registrations/", {"status": "nonsense"}).status_code == 400


def test_approval_without_ldap_creates_a_local_account_with_the_chosen_password(
    register, api, staff, django_capture_on_commit_callbacks
):
    register(dn="CN=Ada Lovelace,O=Example,C=UK")
    registration = RegistrationRequest.objects.get()
    api.force_authenticate(staff)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/admin/registrations/{registration.pk}/approve/")
    assert response.status_code == 200
    assert response.json()["status"] == "approved"
    user = User.objects.get(username="ada_l")
    assert (user.email, user.first_name, user.last_name, user.is_staff) == ("ada@example.org", "Ada", "Lovelace", False)
    assert authenticate(username="ada_l", password=REGISTRATION_PASSWORD) == user
    registration.refresh_from_db()
    assert (registration.user, registration.decided_by) == (user, staff)
    assert registration.password_hash == "" and registration.ldap_password_hash == ""
    assert [m.to for m in mail.outbox] == [["ada@example.org"]]
    assert "ready" in mail.outbox[0].subject
    assert "/accounts/login/" in mail.outbox[0].body


def test_approval_gives_the_user_a_personal_project_with_default_quota(register, api, staff, settings):
    register()
    api.force_authenticate(staff)
    api.post(f"/api/v1/admin/registrations/{RegistrationRequest.objects.get().pk}/approve/")
    project = Project.objects.get(personal_owner__username="ada_l")
    assert project.name == "personal-ada_l"
    assert Membership.objects.get(project=project).role == "manager"
    assert project.quota.limits() == settings.ACCOUNTS_QUOTA_DEFAULTS


def test_rejection_mails_the_reason_and_creates_no_account(register, api, staff, django_capture_on_commit_callbacks):
    register()
    registration = RegistrationRequest.objects.get()
    api.force_authenticate(staff)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            f"/api/v1/admin/registrations/{registration.pk}/reject/", {"reason": "Not a member of our VO."}
        )
    assert response.status_code == 200
    assert response.json()["status"] == "rejected"
    assert response.json()["reason"] == "Not a member of our VO."
    assert not User.objects.filter(username="ada_l").exists()
    assert [m.to for m in mail.outbox] == [["ada@example.org"]]
    assert "Not a member of our VO." in mail.outbox[0].body


def test_a_decided_request_cannot_be_decided_again(register, api, staff):
    register()
    registration = RegistrationRequest.objects.get()
    api.force_authenticate(staff)
    api.post(f"/api/v1/admin/registrations/{registration.pk}/approve/")
    for verb in ("approve", "reject"):
        response = api.post(f"/api/v1/admin/registrations/{registration.pk}/{verb}/")
        assert response.status_code == 409
        assert response.json() == {
            "detail": "this registration request is already approved",
            "code": "registration-decided",
        }
    assert User.objects.filter(username="ada_l").count() == 1


def test_approval_refuses_a_username_taken_since_and_keeps_the_request_pending(register, api, staff):
    register()
    registration = RegistrationRequest.objects.get()
    UserFactory(username="ADA_L")
    api.force_authenticate(staff)
    response = api.post(f"/api/v1/admin/registrations/{registration.pk}/approve/")
    assert response.status_code == 409
    assert response.json()["code"] == "username-taken"
    registration.refresh_from_db()
    assert registration.status == "pending" and registration.password_hash


def test_staff_approve_in_the_console(register, client, staff):
    register()
    registration = RegistrationRequest.objects.get()
    client.force_login(staff)
    page = client.get("/accounts/console/registrations/")
    assert page.status_code == 200
    assert b"ada_l" in page.content and b"I compute Bernoulli numbers." in page.content
    response = client.post(f"/accounts/console/registrations/{registration.pk}/approve/", follow=True)
    assert b"ada_l is approved" in response.content
    assert User.objects.filter(username="ada_l").exists()


def test_staff_reject_in_the_console_with_a_reason(register, client, staff):
    register()
    registration = RegistrationRequest.objects.get()
    client.force_login(staff)
    client.post(f"/accounts/console/registrations/{registration.pk}/reject/", {"reason": "duplicate"})
    registration.refresh_from_db()
    assert (registration.status, registration.reason) == ("rejected", "duplicate")


def test_console_is_for_staff_only(client, owner):
    assert client.get("/accounts/console/registrations/").status_code == 302
    client.force_login(owner)
    assert client.get("/accounts/console/registrations/").status_code == 403


def test_registration_page_submits_and_shows_field_errors(client):
    page = client.get("/accounts/register/")
    assert page.status_code == 200
    form = {**registration_body(), "password_again": REGISTRATION_PASSWORD, "accept_terms": "on"}
    bad = client.post("/accounts/register/", {**form, "username": "x"})
    assert bad.status_code == 200
    assert b"use 3 to 20 letters" in bad.content
    good = client.post("/accounts/register/", form)
    assert good.status_code == 302 and good["Location"] == "/accounts/register/done/"
    assert RegistrationRequest.objects.get().username == "ada_l"


def test_registration_page_refuses_unaccepted_terms(client):
    form = {**registration_body(), "password_again": REGISTRATION_PASSWORD}
    del form["accept_terms"]
    response = client.post("/accounts/register/", form)
    assert b"you must accept the terms of use" in response.content
    assert not RegistrationRequest.objects.exists()


def test_login_page_links_to_registration(client):
    assert b'href="/accounts/register/"' in client.get("/accounts/login/").content


def test_a_retried_registration_with_the_same_idempotency_key_is_stored_once(api):
    body = registration_body()
    first = api.post("/api/v1/accounts/registrations/", body, format="json", HTTP_IDEMPOTENCY_KEY="reg-1")
    again = api.post("/api/v1/accounts/registrations/", body, format="json", HTTP_IDEMPOTENCY_KEY="reg-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert RegistrationRequest.objects.count() == 1


def test_registrations_from_one_address_are_rate_limited_on_the_api_and_the_page(api, client, monkeypatch):
    # DRF reads the rates once, into the throttle class: set this test's rate there.
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "registration", "2/hour")
    for n in range(2):
        body = registration_body(username=f"user_{n}", email=f"user{n}@example.org")
        assert api.post("/api/v1/accounts/registrations/", body, format="json").status_code == 201
    refused = api.post(
        "/api/v1/accounts/registrations/",
        registration_body(username="user_2", email="user2@example.org"),
        format="json",
    )
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    # The page counts in the same bucket: refused too, with the reason on the form.
    page = client.post("/accounts/register/", {"username": "user_3"})
    assert page.status_code == 429
    assert "Too many registrations from your address" in page.content.decode()
    assert RegistrationRequest.objects.count() == 2


def test_a_username_with_a_trailing_newline_is_refused_with_a_field_error(register):
    response = register(username="bob\n")
    assert response.status_code == 400
    assert response.json()["detail"] == "username: use 3 to 20 letters, digits or underscores"
    assert "username" in response.json()["errors"]
    assert not RegistrationRequest.objects.exists()
