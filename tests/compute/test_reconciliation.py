"""Reconciliation on libvirt's test driver: drift between domains and instances, hosts going down and coming
back, unknown domains, stuck instances, the quarantine purge and usage records."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from unittest import mock

import pytest
from django.db import transaction
from django.utils import timezone

from compute import hypervisor, reconciliation, tasks
from compute.domain import DiskSpec, DomainSpec, domain_xml
from compute.models import Host, Instance, UsageRecord
from compute.scheduler import place
from compute.selectors import project_usage_hours
from core.errors import Conflict
from core.models import AuditEntry
from tests.race import race

pytestmark = pytest.mark.django_db

NODE = """<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>8</cores><threads>1</threads><active>8</active>
    <mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>16777216</memory>
</node>"""
UNREACHABLE = "qemu+unix:///system?socket=/nonexistent"


@pytest.fixture(autouse=True)
def _fresh_connections():
    yield
    hypervisor.disconnect_all()


@pytest.fixture
def host(tmp_path, types) -> Host:
    """A private simulated host (a test-driver file URI) registered as ``hv1``."""
    node = tmp_path / "hv1.xml"
    node.write_text(NODE)
    return Host.objects.create(name="hv1", uri=f"test://{node}", vcpus=8, ram_mib=16384)


@pytest.fixture
def vm(instance_on, types):
    """``vm(host, state, domain=None|"running"|"shut off")``: an instance on ``host``, with its domain defined
    (and started) through the adapter when ``domain`` says so."""

    def make(host: Host, state: str, domain: str | None = None, name: str = "vm") -> Instance:
        instance = instance_on(host, types["m1.large"], state=state, name=name)
        if domain is not None:
            define(host, instance.uuid, running=domain == hypervisor.RUNNING)
        return instance

    return make


def define(host: Host, domain_uuid: uuid.UUID, *, running: bool, name: str | None = None) -> str:
    name = name or f"alto-{domain_uuid}"
    spec = DomainSpec(
        name=name,
        uuid=domain_uuid,
        vcpus=1,
        ram_mib=512,
        console_log=f"/var/log/alto/{name}.log",
        disks=(DiskSpec(target="vda", path=f"/var/lib/alto/{name}.qcow2"),),
    )
    hypervisor.domain_define(host.uri, domain_xml(spec))
    if running:
        hypervisor.domain_start(host.uri, name)
    return name


def refreshed(instance: Instance) -> Instance:
    instance.refresh_from_db()
    return instance


def test_a_running_instance_whose_domain_is_shut_off_becomes_stopped(host, vm):
    instance = vm(host, "running", domain=hypervisor.SHUT_OFF)
    report = reconciliation.host_reconcile(host_id=host.pk)
    assert refreshed(instance).state == "stopped"
    assert "stopped outside the portal" in instance.state_message
    assert [(c.found, c.to) for c in report.changes] == [("running", "stopped")]
    assert AuditEntry.objects.filter(action="compute.instance.stopped", object_id=str(instance.pk)).exists()


def test_a_stopped_instance_whose_domain_runs_becomes_running(host, vm):
    instance = vm(host, "stopped", domain=hypervisor.RUNNING)
    reconciliation.host_reconcile(host_id=host.pk)
    assert refreshed(instance).state == "running"


@pytest.mark.parametrize("state", ["running", "stopped"])
def test_an_instance_whose_domain_disappeared_goes_to_error(host, vm, state):
    instance = vm(host, state)
    reconciliation.host_reconcile(host_id=host.pk)
    assert refreshed(instance).state == "error"
    assert "its domain disappeared" in instance.state_message


def test_instances_that_agree_with_libvirt_and_worker_steps_are_left_alone(host, vm):
    agreeing = vm(host, "running", domain=hypervisor.RUNNING, name="a")
    booting = vm(host, "booting", name="b")  # no domain yet: the worker's business
    report = reconciliation.host_reconcile(host_id=host.pk)
    assert report.changes == []
    assert refreshed(agreeing).state == "running"
    assert refreshed(booting).state == "booting"


def test_an_unreachable_host_goes_down_and_its_work_in_flight_fails_with_the_reason(host, vm, types):
    preparing = vm(host, "preparing", name="p")
    running = vm(host, "running", name="r")
    Host.objects.filter(pk=host.pk).update(uri=UNREACHABLE)

    reconciliation.host_reconcile(host_id=host.pk)
    reconciliation.host_reconcile(host_id=host.pk)

    host.refresh_from_db()
    assert host.state == "down" and host.message
    assert refreshed(preparing).state == "error"
    assert preparing.state_message.startswith("host hv1 stopped answering: ")
    assert refreshed(running).state == "running"
    assert running.state_message.startswith("host hv1 is down")
    assert AuditEntry.objects.filter(action="compute.host.down").count() == 1
    with transaction.atomic(), pytest.raises(Conflict):
        place(instance_type=types["t1.micro"])


def test_a_host_that_answers_again_comes_back_up_audited_and_schedulable(host, vm, types, tmp_path):
    running = vm(host, "running", domain=hypervisor.RUNNING)
    uri = host.uri
    Host.objects.filter(pk=host.pk).update(uri=UNREACHABLE)
    reconciliation.host_reconcile(host_id=host.pk)
    Host.objects.filter(pk=host.pk).update(uri=uri)

    report = reconciliation.host_reconcile(host_id=host.pk)

    host.refresh_from_db()
    assert report.state == "up" and host.state == "up" and host.message == "" and host.last_seen
    assert AuditEntry.objects.filter(action="compute.host.up").count() == 1
    assert refreshed(running).state == "running" and running.state_message == ""
    with transaction.atomic():
        assert place(instance_type=types["t1.micro"]) == host


def test_an_unknown_alto_domain_is_reported_and_audited_once_but_not_destroyed(host, vm):
    stray = define(host, uuid.UUID(int=0xABCD), running=True)
    define(host, uuid.UUID(int=7), running=True, name="someone-elses")  # not ours: not reported

    first = reconciliation.host_reconcile(host_id=host.pk)
    second = reconciliation.host_reconcile(host_id=host.pk)

    assert first.unknown_domains == second.unknown_domains == [stray]
    assert hypervisor.domain_state(host.uri, stray) == hypervisor.RUNNING
    assert AuditEntry.objects.filter(action="compute.host.unknown_domain").count() == 1


def test_a_transition_that_lost_the_race_to_a_worker_is_skipped(host, vm):
    instance = vm(host, "running", domain=hypervisor.SHUT_OFF)
    real_domains = hypervisor.domains

    def worker_moves_it_meanwhile(uri):
        Instance.objects.filter(pk=instance.pk).update(state="stopping")
        return real_domains(uri)

    with mock.patch.object(hypervisor, "domains", autospec=True, side_effect=worker_moves_it_meanwhile):
        report = reconciliation.host_reconcile(host_id=host.pk)

    assert report.changes == [] and report.skipped == [str(instance.uuid)]
    assert refreshed(instance).state == "stopping"


def test_an_instance_stuck_past_the_deadline_goes_to_error(settings, host, vm):
    settings.INSTANCE_STEP_DEADLINE_MINUTES = 30
    stuck = vm(host, "booting", name="old")
    fresh = vm(host, "preparing", name="new")
    done = vm(host, "running", name="done")
    Instance.objects.filter(pk__in=[stuck.pk, done.pk]).update(updated=timezone.now() - timedelta(minutes=31))

    assert reconciliation.stuck_instances_fail() == 1

    assert refreshed(stuck).state == "error"
    assert stuck.state_message == "stuck in booting for more than 30 minutes"
    assert refreshed(fresh).state == "preparing"
    assert refreshed(done).state == "running"


def test_the_quarantine_purge_deletes_only_files_older_than_the_keeping_time(settings, tmp_path):
    settings.QUARANTINE_DIR = tmp_path / "quarantine"
    settings.QUARANTINE_HOURS = 48
    settings.QUARANTINE_DIR.mkdir()
    old = settings.QUARANTINE_DIR / "old.qcow2"
    young = settings.QUARANTINE_DIR / "young.qcow2"
    for path in (old, young):
        path.write_bytes(b"disk")
    long_ago = (timezone.now() - timedelta(hours=49)).timestamp()
    os.utime(old, (long_ago, long_ago))

    assert reconciliation.quarantine_purge() == 1
    assert reconciliation.quarantine_purge() == 0

    assert not old.exists() and young.exists()
    entry = AuditEntry.objects.get(action="compute.quarantine.purged")
    assert entry.details["files"] == ["old.qcow2"]


def test_usage_is_recorded_once_however_often_the_run_repeats(host, vm, project):
    instance = vm(host, "running", domain=hypervisor.RUNNING)
    start = timezone.now()
    with mock.patch.object(timezone, "now", return_value=start):
        reconciliation.host_reconcile(host_id=host.pk)
    later = start + timedelta(seconds=60)
    with mock.patch.object(timezone, "now", return_value=later):
        reconciliation.host_reconcile(host_id=host.pk)
        reconciliation.host_reconcile(host_id=host.pk)

    assert UsageRecord.objects.filter(instance=instance).count() == 1
    usage = project_usage_hours(project=project, start=start - timedelta(hours=1), end=later + timedelta(hours=1))
    # m1.large: 2 vCPU, 6144 MiB for one minute.
    assert usage.vcpu_hours == pytest.approx(2 / 60)
    assert usage.ram_gib_hours == pytest.approx(6 / 60)
    half = project_usage_hours(project=project, start=start + timedelta(seconds=30), end=later + timedelta(hours=1))
    assert half.vcpu_hours == pytest.approx(1 / 60)


def test_a_gap_in_sightings_starts_a_new_usage_record(settings, host, vm):
    settings.COMPUTE_RECONCILE_SECONDS = 60
    instance = vm(host, "running", domain=hypervisor.RUNNING)
    start = timezone.now()
    for offset in (0, 60, 3600):
        with mock.patch.object(timezone, "now", return_value=start + timedelta(seconds=offset)):
            reconciliation.host_reconcile(host_id=host.pk)
    spans = [(r.end - r.start).total_seconds() for r in UsageRecord.objects.filter(instance=instance)]
    assert spans == [60, 0]


def test_reconcile_sends_one_task_per_enabled_host_to_its_queue(host, make_host):
    make_host("hv2", enabled=False)
    with mock.patch.object(tasks.host_reconcile, "apply_async", autospec=True) as send:
        assert tasks.reconcile() == 0
    send.assert_called_once_with(kwargs={"host_id": host.pk}, queue="host.hv1")


def test_the_host_reconcile_task_returns_the_report(host, vm):
    vm(host, "running", domain=hypervisor.SHUT_OFF)
    result = tasks.host_reconcile(host.pk)
    assert result["state"] == "up" and result["changes"][0]["to"] == "stopped"


def test_a_host_removed_since_the_run_was_sent_is_nothing_to_do(db):
    assert reconciliation.host_reconcile(host_id=999999).state == "gone"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_change_each_instance_once_and_record_usage_once(host, vm):
    drifted = vm(host, "running", domain=hypervisor.SHUT_OFF, name="drifted")
    agreeing = vm(host, "running", domain=hypervisor.RUNNING, name="agreeing")

    reports = race([lambda: reconciliation.host_reconcile(host_id=host.pk)] * 2)

    assert not any(isinstance(r, Exception) for r in reports), reports
    assert sum(len(r.changes) for r in reports) == 1
    assert refreshed(drifted).state == "stopped"
    assert AuditEntry.objects.filter(action="compute.instance.stopped").count() == 1
    assert UsageRecord.objects.filter(instance=agreeing).count() == 1


def test_usage_records_cannot_be_edited_in_the_admin(admin_client, host, vm):
    instance = vm(host, "running", domain=hypervisor.RUNNING)
    reconciliation.host_reconcile(host_id=host.pk)
    record = UsageRecord.objects.get(instance=instance)
    assert admin_client.get("/admin/compute/usagerecord/").status_code == 200
    assert admin_client.post(f"/admin/compute/usagerecord/{record.pk}/delete/", {"post": "yes"}).status_code == 403
    assert UsageRecord.objects.filter(pk=record.pk).exists()
