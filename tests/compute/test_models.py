"""What the database itself refuses about hosts, leases and instances, and the compute quota counters."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from accounts.quotas import _counters, _providers, projects_usage
from compute import quota_counters
from compute.models import Instance, Lease

pytestmark = pytest.mark.django_db


@pytest.fixture
def vm(project, image, types, make_host):
    def make(**fields):
        itype = types["t1.micro"]
        values = {
            "name": "vm",
            "project": project,
            "image": image,
            "image_identifier": image.identifier,
            "instance_type": itype,
            "vcpus": 1,
            "ram_mib": 512,
            "root_gib": 10,
            "network": "private",
            "host": make_host(f"h{Instance.objects.count()}"),
            "state": "scheduled",
            **fields,
        }
        return Instance.objects.create(**values)

    return make


def test_a_placed_instance_must_have_a_host(vm):
    with pytest.raises(IntegrityError), transaction.atomic():
        vm(host=None, state="booting")
    assert vm(host=None, state="pending").host is None


def test_an_instance_state_must_be_one_of_the_design_names(vm):
    with pytest.raises(IntegrityError), transaction.atomic():
        vm(state="exploded")


def test_an_instance_has_a_size(vm):
    with pytest.raises(IntegrityError), transaction.atomic():
        vm(vcpus=0)


def test_a_host_state_is_up_or_down(make_host):
    with pytest.raises(IntegrityError), transaction.atomic():
        make_host("h", state="side")


def test_one_instance_cannot_hold_two_leases(vm, networks):
    instance = vm()
    first, second = Lease.objects.filter(network=networks["private"])[:2]
    Lease.objects.filter(pk=first.pk).update(instance=instance)
    with pytest.raises(IntegrityError), transaction.atomic():
        Lease.objects.filter(pk=second.pk).update(instance=instance)


def test_the_quota_counters_count_live_instances_only(vm, project, networks):
    live = vm(vcpus=2, ram_mib=1024, network="public")
    vm(state="terminated", vcpus=8, ram_mib=8192)
    Lease.objects.filter(pk=Lease.objects.filter(network=networks["public"]).first().pk).update(instance=live)
    ids = [project.pk]
    assert quota_counters.instances(ids) == {project.pk: 1}
    assert (quota_counters.vcpus(ids), quota_counters.ram_mib(ids)) == ({project.pk: 2}, {project.pk: 1024})
    assert quota_counters.public_ips(ids) == {project.pk: 1}
    together = {project.pk: {"instances": 1, "vcpus": 2, "ram_mib": 1024}}
    assert quota_counters.live_usage(ids, ["instances", "vcpus", "ram_mib"]) == together
    assert quota_counters.live_usage(ids, ["vcpus"]) == {project.pk: {"vcpus": 2}}


def test_the_counters_are_registered_with_the_quota_service():
    assert quota_counters.public_ips in _counters["public_ips"]
    (covered,) = [resources for resources, provider in _providers if provider is quota_counters.live_usage]
    assert covered == {"instances", "vcpus", "ram_mib"}


def test_a_reservation_counts_instances_vcpus_and_ram_in_one_query(vm, project, django_assert_num_queries):
    vm(vcpus=2, ram_mib=1024)
    # The quota holds' query, then one over the live instances for the three resources (not one each).
    with django_assert_num_queries(2):
        usage = projects_usage(project_ids=[project.pk], resources=["instances", "vcpus", "ram_mib"])
    assert {r: usage[project.pk][r] for r in ("instances", "vcpus", "ram_mib")} == {
        "instances": 1,
        "vcpus": 2,
        "ram_mib": 1024,
    }


def test_a_state_transition_stamps_the_instances_last_change(vm):
    import datetime as dt

    import time_machine

    from core.workflow import transition

    instance = vm(state="running")
    later = instance.updated + dt.timedelta(hours=1)
    with time_machine.travel(later, tick=False), transaction.atomic():
        changed = transition(
            Instance,
            pk=instance.pk,
            allowed={"state": ["running"]},
            changes={"state": "stopped"},
            actor=None,
            action=None,
            code="x",
        )
    assert changed.updated == later


def test_a_transition_given_the_instance_stamps_its_last_change_on_that_copy_too(vm):
    import datetime as dt

    import time_machine

    from core.workflow import transition

    instance = vm(state="running")
    later = instance.updated + dt.timedelta(hours=1)
    with time_machine.travel(later, tick=False), transaction.atomic():
        changed = transition(
            Instance,
            pk=instance.pk,
            allowed={"state": ["running"]},
            changes={"state": "stopped"},
            actor=None,
            action=None,
            code="x",
            row=instance,
        )
    assert changed is instance and (changed.state, changed.updated) == ("stopped", later)
    stored = Instance.objects.get(pk=instance.pk)
    assert (stored.state, stored.updated) == ("stopped", later)
