"""The workflow core: transitions as conditional updates, and the house task's retry rule."""

from __future__ import annotations

import pytest
from django.db import transaction

from accounts.models import RegistrationRequest
from core.errors import Conflict, NotFound, PermanentError, TransientError
from core.models import AuditEntry
from core.workflow import TASK_MAX_RETRIES, task, transition
from tests.race import race


def _pending(**fields) -> RegistrationRequest:
    defaults = {"username": "ada", "email": "ada@example.org", "first_name": "Ada", "last_name": "L"}
    return RegistrationRequest.objects.create(**{**defaults, **fields})


def _reject(pk: int, actor=None) -> RegistrationRequest:
    with transaction.atomic():
        return transition(
            RegistrationRequest,
            pk=pk,
            allowed={"status": ["pending"]},
            changes={"status": "rejected", "reason": "spam"},
            actor=actor,
            action="accounts.registration.rejected",
            code="registration-decided",
        )


@pytest.mark.django_db
def test_a_transition_from_an_allowed_state_changes_the_row_and_writes_the_audit_entry(staff):
    registration = _pending()
    changed = _reject(registration.pk, actor=staff)
    assert changed.status == "rejected"
    assert changed.reason == "spam"
    entry = AuditEntry.objects.get(action="accounts.registration.rejected")
    assert entry.actor == staff
    assert entry.details["status"] == "rejected"


@pytest.mark.django_db
def test_a_transition_from_another_state_is_a_conflict_naming_the_state_found():
    registration = _pending(status="approved")
    with pytest.raises(Conflict) as refused:
        _reject(registration.pk)
    assert refused.value.code == "registration-decided"
    assert "status approved" in refused.value.message
    assert refused.value.extra == {}
    assert not AuditEntry.objects.exists()


def _reject_row(row: RegistrationRequest, actor=None) -> RegistrationRequest:
    with transaction.atomic():
        return transition(
            RegistrationRequest,
            pk=row.pk,
            allowed={"status": ["pending"]},
            changes={"status": "rejected", "reason": "spam"},
            actor=actor,
            action="accounts.registration.rejected",
            code="registration-decided",
            row=row,
        )


@pytest.mark.django_db
def test_a_transition_given_the_callers_row_updates_that_row_without_reading_it_again(staff, django_assert_num_queries):
    registration = _pending()
    # The conditional UPDATE and the audit INSERT (and the transaction's savepoint pair), no SELECT.
    with django_assert_num_queries(4) as done:
        changed = _reject_row(registration, actor=staff)
    assert not [q for q in done.captured_queries if q["sql"].startswith("SELECT")]
    assert changed is registration and (changed.status, changed.reason) == ("rejected", "spam")
    stored = RegistrationRequest.objects.get(pk=registration.pk)
    assert (stored.status, stored.reason) == ("rejected", "spam")
    entry = AuditEntry.objects.get(action="accounts.registration.rejected")
    assert (entry.actor, entry.object_id, entry.details["status"]) == (staff, str(registration.pk), "rejected")


@pytest.mark.django_db
def test_a_transition_given_a_stale_row_is_still_refused_by_the_database():
    registration = _pending()
    RegistrationRequest.objects.filter(pk=registration.pk).update(status="approved")
    with pytest.raises(Conflict) as refused:
        _reject_row(registration)  # the caller's copy still says pending
    assert "status approved" in refused.value.message
    assert registration.status == "pending" and not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_a_transition_refuses_a_row_that_is_not_the_one_named():
    first, second = _pending(), _pending(username="bob", email="bob@example.org")
    with pytest.raises(ValueError, match="not"), transaction.atomic():
        transition(
            RegistrationRequest,
            pk=first.pk,
            allowed={"status": ["pending"]},
            changes={"status": "rejected"},
            actor=None,
            action=None,
            code="registration-decided",
            row=second,
        )
    assert set(RegistrationRequest.objects.values_list("status", flat=True)) == {"pending"}


@pytest.mark.django_db
def test_a_transition_of_a_missing_row_is_not_found():
    with pytest.raises(NotFound):
        _reject(999_999)


@pytest.mark.django_db
def test_none_among_the_allowed_values_matches_null():
    registration = _pending()
    with transaction.atomic():
        changed = transition(
            RegistrationRequest,
            pk=registration.pk,
            allowed={"decided": [None]},
            changes={"reason": "looked at"},
            actor=None,
            action=None,
            code="registration-decided",
        )
    assert changed.reason == "looked at"


@pytest.mark.django_db(transaction=True)
def test_a_transition_outside_a_transaction_is_refused():
    registration = _pending()
    with pytest.raises(RuntimeError):
        transition(
            RegistrationRequest,
            pk=registration.pk,
            allowed={"status": ["pending"]},
            changes={"status": "rejected"},
            actor=None,
            action=None,
            code="x",
        )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_of_ten_simultaneous_transitions_exactly_one_wins():
    registration = _pending()
    outcomes = race([lambda: _reject(registration.pk)] * 10)
    assert sum(isinstance(o, RegistrationRequest) for o in outcomes) == 1
    assert sum(isinstance(o, Conflict) for o in outcomes) == 9
    assert AuditEntry.objects.filter(action="accounts.registration.rejected").count() == 1


def test_the_house_task_acks_late_and_gives_the_message_back_when_the_worker_dies():
    @task("tests.noop")
    def noop() -> str:
        return "done"

    assert noop.name == "tests.noop"
    assert noop.acks_late is True
    assert noop.reject_on_worker_lost is True
    assert noop.max_retries == TASK_MAX_RETRIES


def test_the_house_task_retries_transient_errors_and_then_succeeds():
    calls: list[int] = []

    @task("tests.flaky", max_retries=3)
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("host unreachable")
        return "done"

    assert flaky.apply().get() == "done"
    assert len(calls) == 3


def test_the_house_task_does_not_retry_permanent_errors():
    calls: list[int] = []

    @task("tests.refused", max_retries=3)
    def refused() -> None:
        calls.append(1)
        raise PermanentError("no such volume")

    result = refused.apply()
    assert isinstance(result.result, PermanentError)
    assert result.failed()
    assert len(calls) == 1


def test_the_house_task_gives_up_after_its_bound():
    calls: list[int] = []

    @task("tests.down", max_retries=2)
    def down() -> None:
        calls.append(1)
        raise TransientError("timed out after 5 s")

    result = down.apply()
    assert result.failed()
    assert len(calls) == 3  # the first try and two retries


def test_every_task_of_the_project_is_declared_the_house_way():
    from portal.celery import app

    app.loader.import_default_modules()
    ours = {
        name: t
        for name, t in app.tasks.items()
        if name.split(".")[0] in {"core", "accounts", "marketplace", "compute", "storage", "portal"}
    }
    assert {"core.idempotency_purge", "accounts.directory_sync", "marketplace.notify_expiring"} <= set(ours)
    for name, declared in ours.items():
        assert declared.acks_late and declared.reject_on_worker_lost, name
        assert TransientError in declared.autoretry_for, name
