"""Blast radius (issue 16): every VM records the entries that allowed its image when it was used; when the image's
decision turns from allowed to denied — a deprecation, an expiry, a key revocation, a policy change — each owner
of a VM still running from it gets exactly one notice naming their VMs, staff a summary, and the console and the
admin API list what runs from the image."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import mail
from django.utils import timezone

from accounts.services import ssh_key_add
from compute.models import Instance, TrustNotice
from compute.services import instance_request, instance_terminate
from core.models import AuditEntry
from marketplace import services as marketplace_services
from marketplace.models import TrustChange
from marketplace.policy import PolicyRules, dry_run, verdicts
from marketplace.policy.services import policy_change
from marketplace.services.trust import trust_changes_deliver
from tests.compute.conftest import public_key_line
from tests.marketplace.conftest import T0

pytestmark = pytest.mark.django_db


@pytest.fixture
def cluster(make_host, types, networks):
    make_host("h1", vcpus=16, ram_mib=32768)
    return types


@pytest.fixture
def run_vm(project, image, cluster):
    """``run_vm(user, name)``: ``user`` asks for an m1.small from the creator's image in ``project``."""

    def run(user, name: str) -> Instance:
        key = ssh_key_add(actor=user, name=f"{name}-key", public_key=public_key_line())
        return instance_request(
            actor=user,
            project=project,
            image=image,
            instance_type=cluster["m1.small"],
            network="private",
            ssh_keys=[key.pk],
            name=name,
        )

    return run


@pytest.fixture
def two_users_running(run_vm, owner, member):
    """The owner runs one VM from the image, the member two."""
    return {"owner": [run_vm(owner, "analysis")], "member": [run_vm(member, "render-1"), run_vm(member, "render-2")]}


def deprecate(owner, entry_for, *, at: dt.datetime = T0 + dt.timedelta(days=1)) -> None:
    marketplace_services.entry_upload(raw=entry_for("owner", at=at, deprecated="CVE-2026-0001 in sshd"), uploader=owner)


def notices_of(user) -> list[TrustNotice]:
    return list(TrustNotice.objects.filter(user=user))


# --- What a VM records -------------------------------------------------------------------------------------------


def test_a_vm_records_the_entries_whose_endorsements_allowed_its_image(run_vm, owner, image):
    instance = run_vm(owner, "analysis")

    entry = image.entries.get()
    assert instance.allowed_by == [{"endorser": entry.endorser.email, "created": entry.created.isoformat()}]


# --- The four triggers -------------------------------------------------------------------------------------------


def test_deprecating_an_image_two_users_run_gives_each_one_notice_naming_their_vms(
    two_users_running, owner, member, staff, entry_for, image, django_capture_on_commit_callbacks
):
    deprecate(owner, entry_for)
    with django_capture_on_commit_callbacks(execute=True):  # the mails go once the delivery commits
        delivered = trust_changes_deliver()

    assert delivered == 1
    change = TrustChange.objects.get()
    assert (change.image_id, change.cause, change.verdict_before) == (image.pk, "deprecated", "allowed")
    [owners] = notices_of(owner)
    [members] = notices_of(member)
    assert [i["name"] for i in owners.instances] == ["analysis"]
    assert [i["name"] for i in members.instances] == ["render-1", "render-2"]
    assert "analysis" in owners.message and "render" not in owners.message
    assert "render-1" in members.message and "render-2" in members.message
    assert "an endorser deprecated the image" in members.message
    # One mail per owner, naming their VMs; one summary to staff naming all three.
    to = {tuple(m.to): m for m in mail.outbox}
    assert "analysis" in to[(owner.email,)].body
    assert "render-2" in to[(member.email,)].body
    staff_mail = to[(staff.email,)]
    assert all(name in staff_mail.body for name in ("analysis", "render-1", "render-2"))
    assert AuditEntry.objects.filter(action="compute.trust.notified").count() == 2


def test_delivering_again_or_a_second_delivery_run_sends_nothing_twice(
    two_users_running, owner, entry_for, django_capture_on_commit_callbacks
):
    deprecate(owner, entry_for)
    with django_capture_on_commit_callbacks(execute=True):
        assert trust_changes_deliver() == 1
    TrustChange.objects.update(delivered=None)  # as if the first delivery's mark had been lost

    with django_capture_on_commit_callbacks(execute=True):
        trust_changes_deliver()
        trust_changes_deliver()

    assert TrustNotice.objects.count() == 2
    assert len(mail.outbox) == 3  # the first run's mails only


def test_vms_already_terminated_get_no_notice(run_vm, owner, member, entry_for):
    run_vm(owner, "analysis")
    gone = run_vm(member, "old-render")
    instance_terminate(actor=member, instance=gone)

    deprecate(owner, entry_for)
    trust_changes_deliver()

    assert len(notices_of(owner)) == 1
    assert notices_of(member) == []


def test_an_endorsement_expiring_notifies_once_when_the_verdicts_are_refreshed(
    project, cluster, owner, member, registered, entry_for
):
    registered(owner, "owner")
    soon = timezone.now() + dt.timedelta(days=1)
    image = marketplace_services.entry_upload(raw=entry_for("owner", valid=soon), uploader=owner).image
    key = ssh_key_add(actor=member, name="k", public_key=public_key_line())
    instance_request(
        actor=member,
        project=project,
        image=image,
        instance_type=cluster["m1.small"],
        network="private",
        ssh_keys=[key.pk],
        name="short-lived",
    )

    later = soon + dt.timedelta(hours=1)
    verdicts.verdicts_refresh(now=later)
    verdicts.verdicts_refresh(now=later + dt.timedelta(minutes=5))  # the next run finds nothing new
    trust_changes_deliver()

    [notice] = notices_of(member)
    assert notice.change.cause == "expired"
    assert [i["name"] for i in notice.instances] == ["short-lived"]


def test_revoking_the_endorsers_key_notifies_the_owners(two_users_running, owner, member, image):
    fingerprint = image.entries.get().fingerprint

    marketplace_services.pgp_key_revoke(actor=owner, fingerprint=fingerprint)
    trust_changes_deliver()

    assert [n.change.cause for n in notices_of(member)] == ["key-revoked"]
    assert len(notices_of(owner)) == 1


def test_a_policy_change_that_denies_the_image_notifies_the_owners(two_users_running, member, staff, image):
    policy_change(actor=staff, rules=PolicyRules(images_deny=[image.identifier]))
    verdicts.verdicts_refresh()
    trust_changes_deliver()

    [notice] = notices_of(member)
    assert notice.change.cause == "policy"
    assert "images_deny" in notice.change.summary


def test_an_image_that_stays_allowed_announces_nothing(two_users_running, owner, entry_for):
    marketplace_services.entry_upload(raw=entry_for("owner", at=T0 + dt.timedelta(days=1)), uploader=owner)

    assert trust_changes_deliver() == 0
    assert not TrustChange.objects.exists()


# --- What staff and owners see -----------------------------------------------------------------------------------


def test_the_console_and_the_admin_api_list_both_users_vms_with_owners_and_projects(
    two_users_running, client, api_as, staff, image
):
    client.force_login(staff)
    page = client.get(f"/marketplace/console/images/{image.identifier}/").content.decode()

    for name in ("analysis", "render-1", "render-2"):
        assert name in page
    assert "Running from this image (3)" in page

    rows = api_as(staff).get(f"/api/v1/admin/images/{image.identifier}/instances/").json()
    assert sorted((r["owner"], r["name"], r["project"]) for r in rows) == [
        ("member", "render-1", "climate"),
        ("member", "render-2", "climate"),
        ("owner", "analysis", "climate"),
    ]
    assert all(r["allowed_by"] for r in rows)


@pytest.mark.parametrize("who", ["owner", "member", "outsider"])
def test_only_staff_read_what_runs_from_an_image(two_users_running, api_as, request, who, image):
    response = api_as(request.getfixturevalue(who)).get(f"/api/v1/admin/images/{image.identifier}/instances/")

    assert response.status_code == 403


def test_the_policy_dry_run_says_how_many_running_vms_a_change_would_touch(two_users_running, image):
    result = dry_run(PolicyRules(images_deny=[image.identifier]))

    assert result.running_touched == 3
    assert [c.running for c in result.newly_denied] == [3]


def test_the_owner_sees_the_notice_on_the_dashboard_until_dismissed(
    two_users_running, owner, member, client, api_as, entry_for
):
    deprecate(owner, entry_for)
    trust_changes_deliver()
    client.force_login(member)

    assert "render-1" in client.get("/").content.decode()
    [listed] = api_as(member).get("/api/v1/compute/notices/").json()["results"]
    assert listed["cause"] == "deprecated"

    # Someone else's notice cannot be dismissed (the same 404 as a missing one).
    other = TrustNotice.objects.get(user=owner)
    assert api_as(member).post(f"/api/v1/compute/notices/{other.pk}/dismiss/").status_code == 404

    assert client.post(f"/notices/{listed['id']}/dismiss/").status_code == 302
    # The VM is still listed on the dashboard; the notice about it is gone.
    assert f'id="trust-notice-{listed["id"]}"' not in client.get("/").content.decode()
    assert TrustNotice.objects.get(user=owner).dismissed is None
