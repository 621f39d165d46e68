"""instance_request and instance_terminate: membership, the site policy, validation, quota, placement
and leases in one transaction, and what terminating gives back."""

from __future__ import annotations

import pytest

from accounts import selectors as account_selectors
from accounts.quotas import QuotaExceeded, project_usage, quota_set
from compute.models import Host, Instance, InstanceType, Lease
from compute.services import instance_request, instance_terminate
from core.errors import ApplicationError, Conflict, NotFound, PermissionDenied
from core.models import AuditEntry
from marketplace.policy import PolicyRules
from marketplace.policy.services import policy_change

pytestmark = pytest.mark.django_db


@pytest.fixture
def cluster(make_host, types, networks):
    make_host("h1", vcpus=8, ram_mib=16384)
    make_host("h2", vcpus=8, ram_mib=16384)
    return types


@pytest.fixture
def request_vm(owner, project, image, cluster, owner_key):
    """``request_vm(**changes)``: the owner asks for an m1.small on the private network."""

    def ask(**changes):
        values = {
            "actor": owner,
            "project": project,
            "image": image,
            "instance_type": cluster["m1.small"],
            "network": "private",
            "ssh_keys": [owner_key.pk],
            "user_data": "#cloud-config\n",
            "volatile_gib": 0,
            "name": "vm1",
            **changes,
        }
        return instance_request(**values)

    return ask


def test_a_request_creates_a_scheduled_instance_with_a_host_a_lease_and_an_audit_entry(
    request_vm, owner_key, project, django_capture_on_commit_callbacks, enqueued, frontend_syncs
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        vm = request_vm()
    assert len(callbacks) == 2 and enqueued == [("compute.instance_prepare", vm.pk, f"host.{vm.host.name}")]
    assert frontend_syncs == ["frontend"]  # the VM's firewall reaches the front end
    vm.refresh_from_db()
    assert vm.state == "scheduled" and vm.host is not None
    assert (vm.vcpus, vm.ram_mib, vm.swap_mib, vm.root_gib) == (1, 1536, 1536, 10)
    assert vm.ssh_keys == [owner_key.public_key] and vm.policy_warnings == []
    assert vm.lease.network.kind == "private" and vm.lease.ip == "10.10.0.2"
    entry = AuditEntry.objects.get(action="compute.instance.requested")
    assert entry.details["ip"] == "10.10.0.2" and entry.details["ssh_fingerprints"] == [owner_key.fingerprint]
    usage = project_usage(project=project)
    assert (usage["instances"], usage["vcpus"], usage["ram_mib"], usage["public_ips"]) == (1, 1, 1536, 0)


def test_ssh_keys_may_be_chosen_by_fingerprint(request_vm, owner_key):
    assert request_vm(ssh_keys=[owner_key.fingerprint]).ssh_keys == [owner_key.public_key]


def test_a_public_address_counts_against_the_public_ip_quota(request_vm, project):
    request_vm(network="public")
    assert project_usage(project=project)["public_ips"] == 1
    request_vm(network="public", name="vm2")  # the default quota is 2
    with pytest.raises(QuotaExceeded) as refused:
        request_vm(network="public", name="vm3")
    assert refused.value.message == "Public IP quota exceeded (quota 2, used 2, requested 1)"
    assert Instance.objects.count() == 2


def test_an_outsider_gets_the_same_not_found_as_for_a_missing_project(request_vm, outsider):
    with pytest.raises(NotFound, match="No such project"):
        request_vm(actor=outsider)
    assert not Instance.objects.exists()


def test_a_project_read_for_its_member_does_not_let_an_outsider_in(request_vm, owner, outsider, project):
    # The project as a view loads it for its manager (with the manager's membership) handed on with another actor:
    # the membership it carries is the manager's, so the outsider is checked, and refused, as for any project.
    loaded = account_selectors.access_project(actor=owner, project_id=project.pk)
    with pytest.raises(NotFound, match="No such project"):
        request_vm(actor=outsider, project=loaded)
    assert not Instance.objects.exists() and not Lease.objects.filter(instance__isnull=False).exists()


def test_a_project_read_for_the_requester_is_not_checked_twice(
    request_vm, owner, project, django_assert_max_num_queries
):
    loaded = account_selectors.access_project(actor=owner, project_id=project.pk)
    with django_assert_max_num_queries(40) as done:
        request_vm(project=loaded)
    memberships = [q for q in done.captured_queries if '"accounts_membership"' in q["sql"]]
    assert memberships == []


def test_a_plain_member_may_request_an_instance(request_vm, member):
    assert request_vm(actor=member, ssh_keys=[]).created_by == member


def test_an_image_the_enforced_policy_denies_is_refused_with_the_failed_rules(request_vm, staff):
    policy_change(actor=staff, rules=PolicyRules(min_endorsements=2))
    with pytest.raises(PermissionDenied) as refused:
        request_vm()
    assert refused.value.status == 403 and refused.value.code == "policy-denied"
    assert "min_endorsements" in refused.value.message
    assert [r["rule"] for r in refused.value.extra["rules"]] == ["min_endorsements"]
    assert not Instance.objects.exists() and not Lease.objects.exclude(instance=None).exists()


def test_in_warn_mode_the_instance_is_made_and_keeps_the_warnings(request_vm, staff):
    policy_change(actor=staff, rules=PolicyRules(mode="warn", min_endorsements=2))
    vm = request_vm()
    assert [w["rule"] for w in vm.policy_warnings] == ["min_endorsements"]
    assert vm.policy_warnings[0]["outcome"] == "failed"


def test_quota_exceeded_says_which_quota_and_writes_nothing(request_vm, staff, project):
    quota_set(actor=staff, project=project, limits={"vcpus": 3})
    with pytest.raises(QuotaExceeded) as refused:
        request_vm(instance_type=InstanceType.objects.get(name="m1.xlarge"))
    assert refused.value.status == 409 and refused.value.code == "quota-exceeded"
    assert refused.value.message == "vCPU quota exceeded (quota 3, used 0, requested 4)"
    assert not Instance.objects.exists()


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"name": "-bad-"}, "instance-name"),
        ({"name": "x" * 64}, "instance-name"),
        ({"ssh_keys": [999999]}, "ssh-key-unknown"),
        ({"ssh_keys": ["SHA256:nothere"]}, "ssh-key-unknown"),
        ({"user_data": "x" * (64 * 1024 + 1)}, "user-data-too-large"),
        ({"volatile_gib": -1}, "volatile-size"),
        ({"volatile_gib": 101}, "volatile-size"),
        ({"network": "dmz"}, "network-unknown"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(request_vm, changes, code):
    with pytest.raises(ApplicationError) as refused:
        request_vm(**changes)
    assert refused.value.status == 400 and refused.value.code == code
    assert not Instance.objects.exists()


def test_another_users_ssh_key_cannot_be_chosen(request_vm, member, owner_key):
    with pytest.raises(ApplicationError, match="is not one of your SSH keys"):
        request_vm(actor=member, ssh_keys=[owner_key.pk])


def test_a_disk_image_cannot_boot_a_vm(request_vm, image):
    image.kind = "datablock"
    image.save(update_fields=["kind"])
    with pytest.raises(ApplicationError) as refused:
        request_vm(image=image)
    assert refused.value.code == "image-not-machine"


def test_when_no_host_has_room_the_request_is_refused_and_leaves_no_lease(request_vm, cluster, project, staff):
    Host.objects.update(maintenance=True)
    with pytest.raises(Conflict) as refused:
        request_vm()
    assert refused.value.message == "no host has room for m1.small: 2 in maintenance"
    assert not Lease.objects.exclude(instance=None).exists()


def test_terminating_an_instance_that_never_ran_ends_it_and_gives_back_lease_and_quota(request_vm, owner, project):
    vm = request_vm(network="public")
    ended = instance_terminate(actor=owner, instance=vm)
    assert ended.state == "terminated"
    assert not Lease.objects.exclude(instance=None).exists()
    usage = project_usage(project=project)
    assert (usage["instances"], usage["vcpus"], usage["public_ips"]) == (0, 0, 0)
    assert AuditEntry.objects.filter(action="compute.instance.terminated").count() == 1


def test_terminating_a_running_instance_leaves_it_terminating_for_the_worker(request_vm, owner):
    vm = request_vm()
    Instance.objects.filter(pk=vm.pk).update(state="running")
    assert instance_terminate(actor=owner, instance=vm).state == "terminating"
    assert Lease.objects.filter(instance=vm).exists()


def test_terminating_twice_is_a_conflict(request_vm, owner):
    vm = request_vm()
    instance_terminate(actor=owner, instance=vm)
    with pytest.raises(Conflict, match="is terminated already"):
        instance_terminate(actor=owner, instance=vm)
