"""The audit log page of the admin console: newest first, filtered by actor, action and object, a page at a time,
staff only."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.quotas import quota_set
from core import audit

pytestmark = pytest.mark.django_db


@pytest.fixture
def log(staff, owner, project):
    """The project's creation is logged by the fixtures; add a quota change by staff and an action by the owner."""
    quota_set(actor=staff, project=project, limits={"vcpus": 40})
    audit.record(owner, "compute.instance.started", project, note="by hand")
    audit.record(None, "compute.reconcile.drift", None, host="hv1")


def _actions(answer) -> list[str]:
    return [entry.action for entry in answer.context["page"].object_list]


def test_a_researcher_gets_the_403_page_and_an_anonymous_visitor_the_login(client, owner):
    assert client.get("/console/audit/")["Location"] == "/accounts/login/?next=/console/audit/"
    client.force_login(owner)
    answer = client.get("/console/audit/")
    assert answer.status_code == 403 and "<h1>Not allowed</h1>" in answer.content.decode()


def test_staff_read_the_log_newest_first_with_actor_object_and_details(client, staff, log):
    client.force_login(staff)
    answer = client.get("/console/audit/")
    actions = _actions(answer)
    assert actions[:3] == ["compute.reconcile.drift", "compute.instance.started", "accounts.quota.changed"]
    page = answer.content.decode()
    row = page.split('data-action="accounts.quota.changed"')[1].split("</tr>")[0]
    assert "<td>staff</td>" in row and "climate" in row and "[20, 40]" in row
    assert "<td>system</td>" in page.split('data-action="compute.reconcile.drift"')[1].split("</tr>")[0]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("actor=owner", ["compute.instance.started", "accounts.project.member_added"]),
        ("action=compute.", ["compute.reconcile.drift", "compute.instance.started"]),
        ("action=accounts.quota", ["accounts.quota.changed"]),
        ("object=climate&action=compute", ["compute.instance.started"]),
        ("object_type=accounts.project&actor=staff&action=accounts.quota", ["accounts.quota.changed"]),
        ("actor=nobody", []),
    ],
)
def test_the_filters_narrow_the_log(client, staff, log, query, expected):
    client.force_login(staff)
    answer = client.get(f"/console/audit/?{query}")
    assert answer.status_code == 200
    assert _actions(answer) == expected


def test_the_object_filter_matches_an_objects_id(client, staff, project, log):
    client.force_login(staff)
    answer = client.get(f"/console/audit/?object_type=accounts.project&object={project.pk}")
    assert "accounts.quota.changed" in _actions(answer) and "compute.reconcile.drift" not in _actions(answer)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("since=yesterday", "Since (e.g. 2026-12-01T00:00:00Z): Enter a valid date/time."),
        ("object_type=evil.model", "Object kind: Select a valid choice. evil.model is not one of the available"),
    ],
)
def test_a_bad_filter_is_named_and_lists_nothing(client, staff, log, query, message):
    client.force_login(staff)
    answer = client.get(f"/console/audit/?{query}")
    assert answer.status_code == 400
    assert message in answer.content.decode()
    assert _actions(answer) == []


def test_the_log_is_paginated_and_a_page_costs_the_same_queries_however_long_the_log(client, staff, owner, log):
    client.force_login(staff)
    with CaptureQueriesContext(connection) as few:
        client.get("/console/audit/")
    for n in range(120):
        audit.record(owner if n % 2 else staff, "compute.instance.started", owner, n=n)
    with CaptureQueriesContext(connection) as many:
        answer = client.get("/console/audit/?action=compute")
    assert len(answer.context["page"].object_list) == 50
    assert "Page 1 of 3" in answer.content.decode()
    assert "action=compute&amp;page=2" in answer.content.decode()
    assert len(many) == len(few)
