"""Double submits and double approvals on PostgreSQL: exactly one wins."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from accounts.models import Membership, Project, RegistrationRequest
from accounts.services import RegistrationInput, registration_approve, registration_submit
from core.errors import ApplicationError
from portal.management.commands.seed_demo import DEMO_ACCOUNTS
from tests.accounts.conftest import confirm_email, registration_body
from tests.factories import StaffFactory
from tests.race import race


def _codes(outcomes: list[str | Exception]) -> list[str]:
    """Each outcome as a word: what the call returned, or the code of the refusal it raised."""
    for outcome in outcomes:
        if isinstance(outcome, Exception) and not isinstance(outcome, ApplicationError):
            raise outcome
    return [outcome.code if isinstance(outcome, ApplicationError) else outcome for outcome in outcomes]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_ten_simultaneous_registrations_of_one_username_make_one_request():
    def submit(i: int) -> str:
        registration_submit(data=RegistrationInput(**registration_body(email=f"ada{i}@example.org")))  # type: ignore[arg-type]
        return "created"

    outcomes = _codes(race([lambda i=i: submit(i) for i in range(10)]))
    assert outcomes.count("created") == 1
    assert outcomes.count("invalid") == 9
    assert RegistrationRequest.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_staff_approving_at_once_create_one_account():
    registration = registration_submit(data=RegistrationInput(**registration_body()))  # type: ignore[arg-type]
    confirm_email(registration.pk)
    approvers = [StaffFactory(username=f"staff{i}") for i in range(2)]

    def approve(i: int) -> str:
        registration_approve(actor=approvers[i], registration=registration)
        return "approved"

    outcomes = _codes(race([lambda i=i: approve(i) for i in range(2)]))
    assert sorted(outcomes) == ["approved", "registration-decided"]
    assert User.objects.filter(username="ada_l").count() == 1
    assert Project.objects.filter(personal_owner__username="ada_l").count() == 1


@pytest.mark.django_db
def test_seed_demo_gives_the_demo_accounts_their_personal_projects():
    call_command("seed_demo", stdout=StringIO())
    call_command("seed_demo", stdout=StringIO())
    usernames = [account[0] for account in DEMO_ACCOUNTS]
    for username in usernames:
        membership = Membership.objects.get(project__personal_owner__username=username)
        assert membership.role == "manager" and membership.user.username == username
    assert Project.objects.count() == len(usernames) == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_ten_simultaneous_registrations_of_one_address_make_one_request():
    def submit(i: int) -> str:
        try:
            registration_submit(data=RegistrationInput(**registration_body(username=f"ada_{i}")))  # type: ignore[arg-type]
        except ApplicationError as exc:
            assert exc.extra["errors"] == {
                "email": ["a registration with this e-mail address is already waiting for a decision"]
            }
            raise
        return "created"

    outcomes = _codes(race([lambda i=i: submit(i) for i in range(10)]))
    assert outcomes.count("created") == 1
    assert outcomes.count("invalid") == 9
    assert RegistrationRequest.objects.count() == 1
