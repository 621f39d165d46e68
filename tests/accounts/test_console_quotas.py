"""The quota console (staff): every project's usage against its limits, and editing the limits through the quota
service, with bad input refused clearly and nothing changed."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Quota, QuotaHold
from accounts.services import project_create
from core.models import AuditEntry
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

LIMITS = {"instances": 10, "vcpus": 20, "ram_mib": 40960, "volume_gib": 500, "volumes": 10, "public_ips": 2}


def _form(**changes: object) -> dict[str, str]:
    return {key: str(value) for key, value in {**LIMITS, **changes}.items()}


def test_a_researcher_gets_the_403_page_and_an_anonymous_visitor_the_login(client, owner, project):
    assert client.get("/accounts/console/quotas/")["Location"] == "/accounts/login/?next=/accounts/console/quotas/"
    client.force_login(owner)
    assert client.get("/accounts/console/quotas/").status_code == 403
    answer = client.post(f"/accounts/console/quotas/{project.pk}/", _form(vcpus=999))
    assert answer.status_code == 403 and "<h1>Not allowed</h1>" in answer.content.decode()
    assert Quota.objects.get(project=project).vcpus == 20


def test_staff_see_every_projects_usage_against_its_limits(client, staff, project):
    QuotaHold.objects.create(project=project, holder="test", vcpus=4, instances=1)
    client.force_login(staff)
    page = client.get("/accounts/console/quotas/").content.decode()
    row = page.split('data-project="climate"')[1].split("</tr>")[0]
    assert '<td data-resource="vcpus">4 / 20</td>' in row
    assert '<td data-resource="instances">1 / 10</td>' in row
    assert "<td>2</td>" in row  # members: owner and member


def test_the_project_filter_finds_projects_by_part_of_their_name(client, staff, project):
    project_create(actor=staff, name="physics", manager=UserFactory(username="phil"))
    client.force_login(staff)
    answer = client.get("/accounts/console/quotas/?name=PHYS")
    assert [row["project"].name for row in answer.context["page"].object_list] == ["physics"]


def test_the_quota_list_costs_the_same_queries_for_a_full_page(client, staff, project):
    client.force_login(staff)
    with CaptureQueriesContext(connection) as few:
        client.get("/accounts/console/quotas/")
    for n in range(60):
        project_create(actor=staff, name=f"p{n:02}", manager=staff)
    with CaptureQueriesContext(connection) as many:
        answer = client.get("/accounts/console/quotas/")
    assert len(answer.context["page"].object_list) == 50
    assert len(many) == len(few)


def test_staff_change_a_projects_limits_and_the_change_is_audited(client, staff, project):
    client.force_login(staff)
    answer = client.post(f"/accounts/console/quotas/{project.pk}/", _form(vcpus=64, public_ips=0), follow=True)
    assert "The quota of climate is changed." in answer.content.decode()
    quota = Quota.objects.get(project=project)
    assert (quota.vcpus, quota.public_ips, quota.instances) == (64, 0, 10)
    entry = AuditEntry.objects.get(action="accounts.quota.changed")
    assert entry.actor == staff and entry.details == {"changes": {"vcpus": [20, 64], "public_ips": [2, 0]}}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vcpus": -1}, "Ensure this value is greater than or equal to 0."),
        ({"ram_mib": "lots"}, "Enter a whole number."),
        ({"instances": 2**31}, "Ensure this value is less than or equal to 2147483647."),
        ({"volumes": ""}, "This field is required."),
        ({"public_ips": "1.5"}, "Enter a whole number."),
    ],
)
def test_bad_limits_are_refused_clearly_and_change_nothing(client, staff, project, changes, message):
    client.force_login(staff)
    answer = client.post(f"/accounts/console/quotas/{project.pk}/", _form(**changes))
    assert answer.status_code == 400
    assert message in answer.content.decode()
    assert Quota.objects.get(project=project).limits() == LIMITS
    assert not AuditEntry.objects.filter(action="accounts.quota.changed").exists()


def test_the_quota_of_a_missing_project_is_the_404_page(client, staff):
    client.force_login(staff)
    assert client.get("/accounts/console/quotas/4242/").status_code == 404
