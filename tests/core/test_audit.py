from __future__ import annotations

import pytest

from core import audit
from core.models import AuditEntry

pytestmark = pytest.mark.django_db


def test_record_keeps_actor_action_object_and_details(owner, staff):
    entry = audit.record(staff, "accounts.user.approved", owner, reason="known colleague")
    entry.refresh_from_db()
    assert entry.actor == staff and entry.actor_repr == "staff"
    assert entry.action == "accounts.user.approved"
    assert entry.content_type.model == "user" and entry.object_id == str(owner.pk)
    assert entry.details == {"reason": "known colleague"}


def test_record_blanks_secrets_at_any_depth(owner):
    entry = audit.record(
        owner, "accounts.token.created", None, password="hunter2", nested={"api_token": "abc"}, name="ci"
    )
    assert entry.details["password"] != "hunter2"
    assert set(entry.details["password"]) == {"*"}
    assert entry.details["nested"]["api_token"] != "abc"
    assert entry.details["name"] == "ci"


def test_record_without_actor_is_the_system(owner):
    entry = audit.record(None, "compute.host.registered", owner)
    assert entry.actor is None and entry.actor_repr == ""


def test_audit_log_is_listed_in_the_django_admin(client, staff):
    staff.is_superuser = True
    staff.save()
    audit.record(staff, "portal.demo.thing", staff)
    client.force_login(staff)
    response = client.get("/admin/core/auditentry/")
    assert response.status_code == 200
    assert b"portal.demo.thing" in response.content


def test_audit_api_filters_by_action_prefix_for_staff(api_as, staff, owner):
    audit.record(staff, "accounts.user.approved", owner)
    audit.record(staff, "compute.host.registered", None)
    body = api_as(staff).get("/api/v1/admin/audit/", {"action": "accounts."}).json()
    assert [row["action"] for row in body["results"]] == ["accounts.user.approved"]
    assert body["results"][0]["object_type"] == "auth.user"


def test_audit_api_is_closed_to_non_staff(api_as, owner):
    assert api_as(owner).get("/api/v1/admin/audit/").status_code == 403
    assert AuditEntry.objects.count() == 0
