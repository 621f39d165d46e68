"""The worker steps on libvirt's test driver with real qemu-img files: request → running, shutdown, start,
kill, reboot, terminate (root disk to quarantine, lease freed), failures → error with the lease kept."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from compute import execution, hypervisor
from compute.models import Host, Instance, Lease
from compute.services import instance_terminate
from core.errors import Conflict
from core.models import AuditEntry
from marketplace.policy import PolicyRules
from marketplace.policy.services import policy_change
from storage.backends import qemu_img
from storage.models import Volume
from tests.compute.test_hypervisor import NODE

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
]


@pytest.fixture(autouse=True)
def _dirs(settings, tmp_path, monkeypatch):
    settings.INSTANCE_DIR = tmp_path / "instances"
    settings.QUARANTINE_DIR = tmp_path / "quarantine"
    base = tmp_path / "cached.raw"
    qemu_img.image_create(path=base, size_gib=1, fmt="raw")
    monkeypatch.setattr(execution, "image_cache_ensure", lambda *, identifier: SimpleNamespace(path=str(base)))
    yield
    hypervisor.disconnect_all()


@pytest.fixture
def vm(tmp_path, networks, micro_request, volume_settings, django_capture_on_commit_callbacks):
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    Host.objects.create(name="h1", uri=f"test://{node}", vcpus=4, ram_mib=8192)
    with django_capture_on_commit_callbacks(execute=True):
        return micro_request("vm1", user_data="#cloud-config\n", volatile_gib=1)


def _state(vm) -> str:
    vm.refresh_from_db()
    return vm.state


def _run_up(vm) -> None:
    assert execution.instance_prepare(vm.pk) is True
    assert execution.instance_boot(vm.pk) is True
    assert execution.instance_wait_running(vm.pk) is True


def test_the_steps_take_a_requested_instance_to_running(vm, enqueued):
    volatile = Volume.objects.get(kind="volatile")
    assert enqueued == [("storage.volume_create", volatile.pk, "default"), (execution.PREPARE, vm.pk, "host.h1")]
    assert execution.instance_prepare(vm.pk) is True
    assert _state(vm) == "preparing"
    where = execution.instance_dir(vm)
    root = qemu_img.info(where / "root.qcow2")
    assert (root.format, root.virtual_size, root.backing_format) == ("qcow2", 10 * 1024**3, "raw")
    assert (where / "seed.iso").read_bytes()[0x8001:0x8006] == b"CD001"
    assert enqueued[-1] == (execution.BOOT, vm.pk, "host.h1")
    assert execution.instance_boot(vm.pk) is True
    assert hypervisor.domain_state(vm.host.uri, f"alto-{vm.uuid}") == hypervisor.RUNNING
    # The volatile disk is a storage volume, made by the boot step at the latest, held by the instance as vdb.
    volatile.refresh_from_db()
    assert (volatile.state, qemu_img.info(Path(volatile.path)).virtual_size) == ("in-use", 1024**3)
    disks = {d.target: d.source for d in hypervisor.domain_disks(vm.host.uri, f"alto-{vm.uuid}")}
    assert disks["vdb"] == volatile.path
    # The domain runs as soon as it is started: running at once, no wait step.
    assert _state(vm) == "running"
    assert [step for step, *_ in enqueued] == ["storage.volume_create", execution.PREPARE, execution.BOOT]
    assert execution.instance_wait_running(vm.pk) is True
    actions = list(AuditEntry.objects.filter(action__startswith="compute.instance.").values_list("action", flat=True))
    assert {"compute.instance.preparing", "compute.instance.booting", "compute.instance.running"} <= set(actions)


def test_each_step_reads_its_instance_once_with_its_host_and_lease(vm, django_assert_max_num_queries):
    def instance_reads(queries) -> list[str]:
        return [q["sql"] for q in queries if q["sql"].startswith("SELECT") and 'FROM "compute_instance"' in q["sql"]]

    # prepare: read, move to preparing (UPDATE + audit), the policy at the moment of use, allowed_by.
    with django_assert_max_num_queries(12) as prepare:
        assert execution.instance_prepare(vm.pk) is True
    with django_assert_max_num_queries(40) as boot:
        assert execution.instance_boot(vm.pk) is True
    assert len(instance_reads(prepare.captured_queries)) == 1
    # boot reads its instance once; the volatile disk's storage work (made now, attached) reads it no more.
    (boot_read,) = instance_reads(boot.captured_queries)
    assert '"compute_host"' in boot_read and '"compute_lease"' in boot_read
    assert _state(vm) == "running"
    moves = AuditEntry.objects.filter(action__in=["compute.instance.booting", "compute.instance.running"])
    assert moves.count() == 2


def test_steps_run_again_are_harmless(vm):
    assert execution.instance_prepare(vm.pk) is True
    assert execution.instance_prepare(vm.pk) is True  # a worker died after the files: made again, same files
    assert execution.instance_boot(vm.pk) is True
    assert execution.instance_boot(vm.pk) is False  # running already: nothing to do
    assert execution.instance_wait_running(vm.pk) is True
    assert execution.instance_prepare(vm.pk) is False and execution.instance_boot(vm.pk) is False
    assert _state(vm) == "running"


def test_a_domain_not_running_yet_after_start_is_left_booting_for_the_wait_step(vm, enqueued, monkeypatch):
    assert execution.instance_prepare(vm.pk) is True
    real = hypervisor.domain_state
    # libvirt's test driver runs a domain as soon as it starts; a slow host's domain may not run yet.
    monkeypatch.setattr(hypervisor, "domain_state", lambda uri, name: hypervisor.PAUSED)
    assert execution.instance_boot(vm.pk) is True
    assert _state(vm) == "booting" and enqueued[-1] == (execution.WAIT_RUNNING, vm.pk, "host.h1")
    assert execution.instance_wait_running(vm.pk) is False
    monkeypatch.setattr(hypervisor, "domain_state", real)
    assert execution.instance_wait_running(vm.pk) is True
    assert _state(vm) == "running"


def test_a_policy_that_now_denies_the_image_puts_the_instance_in_error_with_the_reason(vm, staff):
    policy_change(actor=staff, rules=PolicyRules(min_endorsements=2))
    assert execution.instance_prepare(vm.pk) is False
    assert _state(vm) == "error" and "site policy refuses" in vm.state_message
    assert Lease.objects.filter(instance=vm).exists()  # kept until terminate


def test_shutdown_start_kill_reboot(vm, owner, enqueued, django_capture_on_commit_callbacks):
    _run_up(vm)
    with django_capture_on_commit_callbacks(execute=True):
        execution.instance_reboot(actor=owner, instance=vm)
    assert enqueued[-1][0] == execution.REBOOT
    execution.instance_reboot_apply(vm.pk)
    assert _state(vm) == "running"
    with django_capture_on_commit_callbacks(execute=True):
        execution.instance_shutdown(actor=owner, instance=vm)
    assert _state(vm) == "stopping" and enqueued[-1][0] == execution.SHUTDOWN
    assert execution.instance_stop_apply(vm.pk, kill=False) is True
    assert execution.instance_wait_stopped(vm.pk) is True
    assert _state(vm) == "stopped"
    with pytest.raises(Conflict, match="stopped"):
        execution.instance_shutdown(actor=owner, instance=vm)
    with django_capture_on_commit_callbacks(execute=True):
        execution.instance_start(actor=owner, instance=vm)
    assert _state(vm) == "booting" and enqueued[-1][0] == execution.BOOT
    assert execution.instance_boot(vm.pk) and execution.instance_wait_running(vm.pk)
    assert _state(vm) == "running"
    with django_capture_on_commit_callbacks(execute=True):
        execution.instance_kill(actor=owner, instance=vm)
    assert execution.instance_stop_apply(vm.pk, kill=True) and execution.instance_wait_stopped(vm.pk)
    assert _state(vm) == "stopped"
    verbs = set(AuditEntry.objects.filter(actor=owner).values_list("action", flat=True))
    assert {f"compute.instance.{v}" for v in ("reboot", "shutdown", "start", "kill")} <= verbs


def test_terminate_quarantines_the_root_disk_and_frees_the_lease(
    vm, owner, settings, enqueued, django_capture_on_commit_callbacks
):
    _run_up(vm)
    with django_capture_on_commit_callbacks(execute=True):
        instance_terminate(actor=owner, instance=vm)
    assert _state(vm) == "terminating" and enqueued[-1] == (execution.TERMINATE, vm.pk, "host.h1")
    assert execution.instance_teardown(vm.pk) is True
    assert _state(vm) == "terminated"
    assert (settings.QUARANTINE_DIR / f"{vm.uuid}.qcow2").exists()
    assert not execution.instance_dir(vm).exists()
    assert hypervisor.domain_state(vm.host.uri, f"alto-{vm.uuid}") == hypervisor.ABSENT
    assert not Lease.objects.filter(instance=vm).exists()
    assert execution.instance_teardown(vm.pk) is False


def test_a_failed_step_puts_the_instance_in_error_and_keeps_its_lease(vm, monkeypatch):
    from compute import tasks

    def refuse(*args, **kwargs):
        raise qemu_img.QemuImgPermanent("qemu-img create failed: No space left on device")

    monkeypatch.setattr(qemu_img, "overlay_create", refuse)
    tasks.instance_prepare.apply(args=[vm.pk])
    assert _state(vm) == "error" and "No space left" in vm.state_message
    assert Lease.objects.filter(instance=vm).exists()
    assert Instance.objects.get(pk=vm.pk).host is not None


def test_waiting_for_a_domain_that_never_runs_is_bounded_and_ends_in_error(vm, monkeypatch):
    from compute import tasks

    monkeypatch.setattr(tasks, "POLL_TIMES", 3)
    calls = []
    real = execution.instance_wait_running
    monkeypatch.setattr(execution, "instance_wait_running", lambda pk: calls.append(pk) or real(pk))
    Instance.objects.filter(pk=vm.pk).update(state="booting")  # no domain was ever defined: never running
    tasks.instance_wait_running.apply(args=[vm.pk])
    assert _state(vm) == "error" and "did not start in time" in vm.state_message
    assert len(calls) == 4  # the first try and three retries
    assert Lease.objects.filter(instance=vm).exists()


def test_the_boot_step_makes_the_classs_libvirt_network_with_the_leases_dhcp_entry_and_teardown_removes_it(
    vm, owner, django_capture_on_commit_callbacks
):
    lease = Lease.objects.get(instance=vm)
    _run_up(vm)
    assert hypervisor.networks(vm.host.uri) == ["alto-private"]
    assert hypervisor.network_dhcp_hosts(vm.host.uri, "alto-private") == {(lease.mac, lease.ip)}
    with django_capture_on_commit_callbacks(execute=True):
        instance_terminate(actor=owner, instance=vm)
    assert execution.instance_teardown(vm.pk) is True
    assert hypervisor.network_dhcp_hosts(vm.host.uri, "alto-private") == set()


def test_the_boot_step_reads_the_attachments_once_and_the_hosts_leases_only_when_it_makes_the_network(
    vm, micro_request, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    _run_up(vm)  # the host's network is made by the first VM's boot, with the leases held on the host
    with django_capture_on_commit_callbacks(execute=True):
        second = micro_request("vm2")
    assert execution.instance_prepare(second.pk) is True
    with django_assert_max_num_queries(20) as boot:
        assert execution.instance_boot(second.pk) is True
    reads = [q["sql"] for q in boot.captured_queries if q["sql"].startswith("SELECT")]
    # The lease came with the instance; the leases on the host are not listed again for each VM booted there.
    assert [sql for sql in reads if 'FROM "compute_lease"' in sql] == []
    assert len([sql for sql in reads if 'FROM "compute_attachment"' in sql]) == 1
    assert _state(second) == "running"
    leases = {(lease.mac, lease.ip) for lease in Lease.objects.filter(instance__in=[vm, second])}
    assert hypervisor.network_dhcp_hosts(vm.host.uri, "alto-private") == leases


def test_prepare_records_the_entries_that_allow_the_image_now_writing_them_only_when_they_changed(
    vm, django_assert_max_num_queries
):
    at_request = list(vm.allowed_by)
    assert at_request  # the request recorded the endorsements that allowed the image then
    with django_assert_max_num_queries(12) as prepare:
        assert execution.instance_prepare(vm.pk) is True
    assert not [q for q in prepare.captured_queries if '"allowed_by"' in q["sql"] and q["sql"].startswith("UPDATE")]
    vm.refresh_from_db()
    assert vm.allowed_by == at_request
    # The decision at the moment of use counts: a row that says otherwise is corrected by the step.
    Instance.objects.filter(pk=vm.pk).update(allowed_by=[], state="scheduled")
    assert execution.instance_prepare(vm.pk) is True
    vm.refresh_from_db()
    assert vm.allowed_by == at_request
