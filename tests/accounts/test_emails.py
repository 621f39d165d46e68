"""An e-mail address names one person: registrations, approvals and changes of address ask
``accounts.emails.email_claim``; a change of address is confirmed from the new address."""

from __future__ import annotations

import datetime as dt
import re
from io import StringIO

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core import mail
from django.core.management import call_command
from django.db import IntegrityError, transaction

from accounts.emails import email_claim, register_email_claim, unregister_email_claim
from accounts.models import RegistrationRequest
from accounts.selectors import email_conflicts
from core.models import AuditEntry
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

RESERVED = "endorser@example.org"


@pytest.fixture
def reserved_claim():
    """A claim as the Marketplace registers one: it reserves one address for nobody here."""

    def claim(email: str, user) -> str | None:
        return "this address belongs to an endorser of the Marketplace" if email == RESERVED else None

    register_email_claim(claim)
    yield claim
    unregister_email_claim(claim)


# --- one address, one person ------------------------------------------------------------------------


def test_two_pending_requests_may_not_share_an_address_whatever_its_case(register):
    assert register(confirmed=False).status_code == 201
    response = register(confirmed=False, username="grace", email="ADA@Example.org")
    assert response.status_code == 400
    assert (
        response.json()["detail"] == "email: a registration with this e-mail address is already waiting for a decision"
    )
    assert "email" in response.json()["errors"]
    assert RegistrationRequest.objects.count() == 1


def test_the_database_refuses_a_second_pending_request_for_one_address(register):
    register()
    with pytest.raises(IntegrityError), transaction.atomic():
        RegistrationRequest.objects.create(username="grace", email="Ada@EXAMPLE.org", first_name="G", last_name="H")


def test_the_address_of_a_rejected_request_may_be_asked_for_again(register, api, staff):
    register()
    api.force_authenticate(staff)
    api.post(f"/api/v1/admin/registrations/{RegistrationRequest.objects.get().pk}/reject/")
    api.force_authenticate(None)
    assert register(username="ada_two").status_code == 201


def test_a_registered_claim_refuses_an_address_at_registration(register, reserved_claim):
    response = register(email=RESERVED)
    assert response.status_code == 400
    assert response.json()["detail"] == "email: this address belongs to an endorser of the Marketplace"
    assert not RegistrationRequest.objects.exists()


def test_an_unregistered_claim_is_no_longer_asked(reserved_claim):
    assert email_claim(RESERVED) is not None
    unregister_email_claim(reserved_claim)
    assert email_claim(RESERVED) is None


def test_approval_refuses_an_address_taken_since_and_keeps_the_request_pending(register, api, staff):
    register()
    registration = RegistrationRequest.objects.get()
    UserFactory(username="someone", email="Ada@Example.org")
    api.force_authenticate(staff)
    response = api.post(f"/api/v1/admin/registrations/{registration.pk}/approve/")
    assert response.status_code == 409
    assert response.json()["code"] == "email-taken"
    registration.refresh_from_db()
    assert registration.status == "pending"
    assert not User.objects.filter(username="ada_l").exists()


def test_approval_asks_the_registered_claims_again(register, api, staff, reserved_claim, monkeypatch):
    register(email="ada@example.org")
    monkeypatch.setattr("tests.accounts.test_emails.RESERVED", "ada@example.org")
    api.force_authenticate(staff)
    response = api.post(f"/api/v1/admin/registrations/{RegistrationRequest.objects.get().pk}/approve/")
    assert response.status_code == 409 and response.json()["code"] == "email-taken"
    assert "endorser" in response.json()["detail"]


def test_approval_does_not_count_the_request_itself_as_a_holder(register, api, staff):
    register()
    api.force_authenticate(staff)
    assert api.post(f"/api/v1/admin/registrations/{RegistrationRequest.objects.get().pk}/approve/").status_code == 200


# --- change of address ------------------------------------------------------------------------------


def _change_link(message) -> str:
    match = re.search(r"http://127\.0\.0\.1:8000(/accounts/profile/email/confirm/[^/\s]+/)", message.body)
    assert match, message.body
    return match.group(1)


def _ask(api, user, email: str, capture):
    api.force_authenticate(user)
    with capture(execute=True):
        response = api.post("/api/v1/accounts/me/email/", {"email": email}, format="json")
    api.force_authenticate(None)
    return response


def test_a_new_address_is_used_only_once_confirmed_from_it(api, owner, client, django_capture_on_commit_callbacks):
    response = _ask(api, owner, "New.Owner@Example.org", django_capture_on_commit_callbacks)
    assert response.status_code == 202
    [confirm] = mail.outbox
    assert confirm.to == ["new.owner@example.org"]
    link = _change_link(confirm)
    assert b"Confirm my new e-mail address" in client.get(link).content  # GET changes nothing
    owner.refresh_from_db()
    assert owner.email == "owner@example.org"
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(link)
    assert done.status_code == 200 and b"now <strong>new.owner@example.org</strong>" in done.content
    owner.refresh_from_db()
    assert owner.email == "new.owner@example.org"
    notice = mail.outbox[1]
    assert notice.to == ["owner@example.org"] and "new.owner@example.org" in notice.body
    entry = AuditEntry.objects.get(action="accounts.user.email_changed")
    assert entry.details == {"old": "owner@example.org", "new": "new.owner@example.org"}
    assert client.post(link).status_code == 200  # confirming again is harmless
    assert AuditEntry.objects.filter(action="accounts.user.email_changed").count() == 1


@pytest.mark.parametrize("taken", ["outsider@example.org", "OUTSIDER@example.org", RESERVED, "ada@example.org"])
def test_an_address_someone_else_holds_is_refused(api, owner, outsider, register, reserved_claim, taken):
    register(confirmed=False)  # ada@example.org waits for a decision
    api.force_authenticate(owner)
    response = api.post("/api/v1/accounts/me/email/", {"email": taken}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "email-taken"
    assert response.json()["detail"].startswith("email: ")
    assert mail.outbox == []


def test_an_address_taken_between_asking_and_confirming_is_refused(
    api, owner, client, django_capture_on_commit_callbacks
):
    _ask(api, owner, "shared@example.org", django_capture_on_commit_callbacks)
    UserFactory(username="quick", email="shared@example.org")
    response = client.post(_change_link(mail.outbox[0]))
    assert response.status_code == 409 and b"already exists" in response.content
    owner.refresh_from_db()
    assert owner.email == "owner@example.org"


def test_an_old_link_stops_working_after_another_change(api, owner, client, django_capture_on_commit_callbacks):
    _ask(api, owner, "first@example.org", django_capture_on_commit_callbacks)
    _ask(api, owner, "second@example.org", django_capture_on_commit_callbacks)
    first, second = (_change_link(m) for m in mail.outbox)
    client.post(second)
    response = client.post(first)
    assert response.status_code == 400 and b"earlier change" in response.content
    owner.refresh_from_db()
    assert owner.email == "second@example.org"


def test_an_expired_or_forged_change_link_is_refused(api, owner, client, settings, django_capture_on_commit_callbacks):
    _ask(api, owner, "late@example.org", django_capture_on_commit_callbacks)
    link = _change_link(mail.outbox[0])
    later = dt.datetime.now(tz=dt.UTC) + dt.timedelta(hours=settings.EMAIL_CONFIRMATION_HOURS, minutes=1)
    with time_machine.travel(later):
        assert b"expired" in client.post(link).content
    assert client.post(link[:-3] + "x/").status_code == 400
    owner.refresh_from_db()
    assert owner.email == "owner@example.org"


@pytest.mark.parametrize(("email", "words"), [("owner@example.org", "already your"), ("not-an-address", "valid")])
def test_a_useless_new_address_is_refused(api_as, owner, email, words):
    response = api_as(owner).post("/api/v1/accounts/me/email/", {"email": email}, format="json")
    assert response.status_code == 400
    assert words in response.json()["detail"]


def test_the_profile_page_asks_for_a_new_address(client, owner, outsider, django_capture_on_commit_callbacks):
    client.force_login(owner)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/accounts/profile/email/", {"email": "fresh@example.org"}, follow=True)
    assert b"We sent a confirmation link to fresh@example.org" in response.content
    assert mail.outbox[0].to == ["fresh@example.org"]
    taken = client.post("/accounts/profile/email/", {"email": "outsider@example.org"})
    assert taken.status_code == 400 and b"already exists" in taken.content


# --- reporting rows that break the rule -------------------------------------------------------------


def test_accounts_sharing_an_address_are_reported_by_the_database_check(db):
    UserFactory(username="one", email="Same@example.org")
    UserFactory(username="two", email="same@EXAMPLE.org")
    UserFactory(username="three", email="other@example.org")
    [conflict] = email_conflicts()
    assert (conflict.kind, conflict.email, conflict.names) == ("users", "same@example.org", ("one", "two"))
    out = StringIO()
    call_command("check", "--database", "default", stdout=out, stderr=out)
    assert "accounts.W001" in out.getvalue() and "one, two" in out.getvalue()
    User.objects.filter(username="two").update(email="two@example.org")
    assert email_conflicts() == []


@pytest.mark.django_db(transaction=True)
def test_the_migration_prints_the_rows_that_share_an_address_and_changes_none(capsys):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("accounts", "0001_initial")], [("accounts", "0002_registration_email_confirmed")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps
        users, requests = old.get_model("auth", "User"), old.get_model("accounts", "RegistrationRequest")
        users.objects.create(username="one", email="Same@example.org")
        users.objects.create(username="two", email="same@example.org")
        requests.objects.create(username="ada", email="ada@example.org", first_name="A", last_name="L")
        requests.objects.create(username="ada2", email="ADA@example.org", first_name="A", last_name="L")
        executor = MigrationExecutor(connection)
        with pytest.raises(RuntimeError, match="Reject all but one") as stopped:  # before the constraint fails
            executor.migrate(after)
        assert "ada@example.org (ada, ada2)" in str(stopped.value)
        printed = capsys.readouterr().out
        assert "same@example.org is shared by the users one, two" in printed
        assert "ada@example.org is shared by the pending registrations ada, ada2" in printed
        assert users.objects.filter(email__iexact="same@example.org").count() == 2  # reported, not changed
        requests.objects.filter(username="ada2").update(status="rejected")
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())


def test_an_address_is_stored_in_its_compared_form(register):
    register(email="Ada.Lovelace@Example.ORG")
    assert RegistrationRequest.objects.get().email == "ada.lovelace@example.org"
