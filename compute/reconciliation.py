"""Reconciliation (DESIGN §4, §7): compare what libvirt runs with what the database says, and repair drift.

Run periodically (``compute.reconcile``), one host at a time on that host's queue. What it repairs is bounded:

- a host that stops answering goes ``down`` (the scheduler skips it); the work in flight on it (``scheduled`` …
  ``terminating``) goes to ``error`` with the reason, while ``running``/``stopped`` instances keep their state and
  get a message saying the host is down; a host that answers again goes ``up``;
- an instance ``running`` whose domain is shut off becomes ``stopped``, a ``stopped`` one whose domain runs becomes
  ``running``, and a ``running``/``stopped`` one whose domain disappeared goes to ``error``;
- an ``alto-…`` domain that no live instance accounts for is reported and audited, never destroyed;
- an instance stuck in a worker step past ``INSTANCE_STEP_DEADLINE_MINUTES`` goes to ``error``;
- quarantined root disks older than ``QUARANTINE_HOURS`` are deleted;
- running instances accrue usage records (vCPU-hours, RAM GiB-hours per project).
- the host's libvirt networks get back the DHCP entries of the leases of its live instances (missing ones
  added, stray ones removed; ``compute.networks.host_networks_repair``).

The database is read before libvirt is asked, and every change is a transition from the state read: a worker that
moved the instance meanwhile wins, and its Conflict is skipped. No transaction is open while libvirt is asked.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from compute import hypervisor, networks
from compute.models import Host, HostState, Instance, InstanceState, UsageRecord
from core import audit
from core.errors import Conflict, NotFound
from core.models import AuditEntry
from core.workflow import transition

logger = logging.getLogger(__name__)

DOMAIN_PREFIX = "alto-"
# States in which a worker step owns the instance: on a host that stopped answering the step cannot finish.
IN_FLIGHT = (
    InstanceState.SCHEDULED,
    InstanceState.PREPARING,
    InstanceState.BOOTING,
    InstanceState.STOPPING,
    InstanceState.TERMINATING,
)
# States whose domain reconciliation checks against libvirt; the others belong to the worker steps.
SETTLED = (InstanceState.RUNNING, InstanceState.STOPPED)
# libvirt states that count as "the guest is on" and "the guest is off".
DOMAIN_ON = frozenset({hypervisor.RUNNING, hypervisor.BLOCKED, hypervisor.PAUSED, hypervisor.SHUTTING_DOWN})
DOMAIN_OFF = frozenset({hypervisor.SHUT_OFF, hypervisor.CRASHED})


def domain_name(instance: Instance) -> str:
    return f"{DOMAIN_PREFIX}{instance.uuid}"


@dataclass
class Change:
    instance: str
    found: str
    to: str
    message: str


@dataclass
class Report:
    """What one run of :func:`host_reconcile` saw and did."""

    host: str
    state: str
    changes: list[Change] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unknown_domains: list[str] = field(default_factory=list)
    usage_recorded: int = 0
    networks_repaired: list[str] = field(default_factory=list)


def _down_message(host: Host) -> str:
    return f"host {host.name} is down: {host.message}"


def _move(instance: Instance, *, to: str, message: str, now: datetime, action: str, report: Report) -> None:
    """Transition ``instance`` from the state it was read in; a worker that moved it meanwhile wins (skipped)."""
    try:
        transition(
            Instance,
            pk=instance.pk,
            allowed={"state": [instance.state]},
            changes={"state": to, "state_message": message, "updated": now},
            actor=None,
            action=action,
            code="instance-state",
            details={"found": instance.state, "reason": "reconciliation"},
        )
    except (Conflict, NotFound):
        report.skipped.append(str(instance.uuid))
        return
    report.changes.append(Change(instance=str(instance.uuid), found=instance.state, to=to, message=message))


def _note(instance: Instance, *, message: str, report: Report) -> None:
    """Set the message of a settled instance without changing its state (no audit: nothing changed hands)."""
    if instance.state_message == message:
        return
    try:
        transition(
            Instance,
            pk=instance.pk,
            allowed={"state": [instance.state]},
            changes={"state_message": message},
            actor=None,
            action=None,
            code="instance-state",
        )
    except (Conflict, NotFound):
        report.skipped.append(str(instance.uuid))


def host_reconcile(*, host_id: int) -> Report:
    """Compare host ``host_id``'s libvirt domains with its instances and repair the drift (see the module).

    No transaction may be open: libvirt is asked between the read and the short transactions that write."""
    host = Host.objects.filter(pk=host_id).first()
    if host is None:
        return Report(host=str(host_id), state="gone")  # removed since the run was sent: nothing to compare
    # Read first, then ask libvirt: a state read here is older than the listing, so a domain the listing shows
    # off really went off after the instance was seen running (and a worker's move in between wins the transition).
    instances = list(Instance.objects.live().filter(host=host).order_by("pk"))
    try:
        listed = hypervisor.domains(host.uri)
    except hypervisor.HostUnreachable as exc:
        return _host_down(host, instances, reason=str(exc))
    return _host_up(host, instances, listed)


def _host_down(host: Host, instances: list[Instance], *, reason: str) -> Report:
    now = timezone.now()
    report = Report(host=host.name, state=HostState.DOWN)
    with transaction.atomic():
        try:
            host = transition(
                Host,
                pk=host.pk,
                allowed={"state": [HostState.UP]},
                changes={"state": HostState.DOWN, "message": reason},
                actor=None,
                action="compute.host.down",
                code="host-state",
            )
        except Conflict:
            # Down already: audited when it went down; keep the latest reason only.
            Host.objects.filter(pk=host.pk).update(message=reason)
            host.message = reason
        for instance in instances:
            if instance.state in IN_FLIGHT:
                _move(
                    instance,
                    to=InstanceState.ERROR,
                    message=f"host {host.name} stopped answering: {reason}",
                    now=now,
                    action="compute.instance.failed",
                    report=report,
                )
            elif instance.state in SETTLED:
                _note(instance, message=_down_message(host), report=report)
    logger.warning("host %s is down: %s", host.name, reason)
    return report


def _host_up(host: Host, instances: list[Instance], listed: list[hypervisor.DomainInfo]) -> Report:
    now = timezone.now()
    report = Report(host=host.name, state=HostState.UP)
    by_name = {info.name: info for info in listed}
    with transaction.atomic():
        was_down_message = _down_message(host) if host.state == HostState.DOWN else None
        try:
            transition(
                Host,
                pk=host.pk,
                allowed={"state": [HostState.DOWN]},
                changes={"state": HostState.UP, "message": "", "last_seen": now},
                actor=None,
                action="compute.host.up",
                code="host-state",
                details={"was": host.message},
            )
        except Conflict:
            Host.objects.filter(pk=host.pk).update(last_seen=now)
        for instance in instances:
            if instance.state not in SETTLED:
                continue
            domain = by_name.get(domain_name(instance))
            if domain is None:
                _move(
                    instance,
                    to=InstanceState.ERROR,
                    message=f"its domain disappeared from host {host.name}",
                    now=now,
                    action="compute.instance.failed",
                    report=report,
                )
            elif instance.state == InstanceState.RUNNING and domain.state in DOMAIN_OFF:
                _move(
                    instance,
                    to=InstanceState.STOPPED,
                    message=f"stopped outside the portal (domain {domain.state})",
                    now=now,
                    action="compute.instance.stopped",
                    report=report,
                )
            elif instance.state == InstanceState.STOPPED and domain.state in DOMAIN_ON:
                _move(
                    instance,
                    to=InstanceState.RUNNING,
                    message="started outside the portal",
                    now=now,
                    action="compute.instance.started",
                    report=report,
                )
            elif was_down_message is not None and instance.state_message == was_down_message:
                _note(instance, message="", report=report)
        report.unknown_domains = _unknown_domains(host, listed)
    with transaction.atomic():
        report.usage_recorded = _usage_record(host, listed, now=now)
    # The networks' DHCP entries against the leases (libvirt is asked outside any transaction).
    try:
        report.networks_repaired = networks.host_networks_repair(host)
    except hypervisor.HypervisorError as exc:
        logger.warning("host %s: could not check its networks: %s", host.name, exc)
    return report


def _unknown_domains(host: Host, listed: list[hypervisor.DomainInfo]) -> list[str]:
    """The ``alto-…`` domains on ``host`` that no live instance on it accounts for; each is audited once.

    They are never destroyed or undefined here: we do not destroy what we cannot account for. The domain may be
    a VM whose row was lost, one being moved by hand, or a name clash with another tool; its disks may hold
    someone's data. Staff decide, from the audit entry and the host."""
    ours = {
        f"{DOMAIN_PREFIX}{uuid}" for uuid in Instance.objects.live().filter(host=host).values_list("uuid", flat=True)
    }
    unknown = [info.name for info in listed if info.name.startswith(DOMAIN_PREFIX) and info.name not in ours]
    for name in unknown:
        seen = AuditEntry.objects.filter(
            action="compute.host.unknown_domain", object_id=str(host.pk), details__domain=name
        ).exists()
        if not seen:
            audit.record(None, "compute.host.unknown_domain", host, domain=name)
            logger.warning("host %s runs domain %s that no instance accounts for", host.name, name)
    return unknown


def _usage_gap() -> timedelta:
    # Two observations further apart than this are not joined: the instance may not have run in between
    # (host down, worker stopped), so the stretch ends at the last sighting and a new one starts.
    return timedelta(seconds=3 * settings.COMPUTE_RECONCILE_SECONDS)


def _usage_record(host: Host, listed: list[hypervisor.DomainInfo], *, now: datetime) -> int:
    """Extend (or start) the usage record of every instance running in the database and in libvirt.

    Locks those instances in primary-key order so that two runs for the same host extend, not duplicate."""
    running_domains = {info.name for info in listed if info.state in DOMAIN_ON}
    instances = [
        instance
        for instance in Instance.objects.select_for_update()
        .filter(host=host, state=InstanceState.RUNNING)
        .order_by("pk")
        if domain_name(instance) in running_domains
    ]
    for instance in instances:
        latest = UsageRecord.objects.filter(instance=instance).order_by("-end", "-pk").first()
        if (
            latest is not None
            and latest.end >= now - _usage_gap()
            and (latest.vcpus, latest.ram_mib) == (instance.vcpus, instance.ram_mib)
        ):
            if latest.end < now:
                UsageRecord.objects.filter(pk=latest.pk).update(end=now)
            continue
        UsageRecord.objects.create(
            project_id=instance.project_id,
            instance=instance,
            start=now,
            end=now,
            vcpus=instance.vcpus,
            ram_mib=instance.ram_mib,
        )
    return len(instances)


def stuck_instances_fail(*, now: datetime | None = None) -> int:
    """Move every instance that stayed in a worker step longer than ``INSTANCE_STEP_DEADLINE_MINUTES`` to
    ``error``; returns how many moved. An instance a worker moves meanwhile (new state or new ``updated``) wins."""
    now = now or timezone.now()
    minutes = settings.INSTANCE_STEP_DEADLINE_MINUTES
    stuck = list(
        Instance.objects.filter(state__in=IN_FLIGHT, updated__lt=now - timedelta(minutes=minutes)).order_by("pk")
    )
    moved = 0
    for instance in stuck:
        with transaction.atomic():
            try:
                transition(
                    Instance,
                    pk=instance.pk,
                    allowed={"state": [instance.state], "updated": [instance.updated]},
                    changes={
                        "state": InstanceState.ERROR,
                        "state_message": f"stuck in {instance.state} for more than {minutes} minutes",
                        "updated": now,
                    },
                    actor=None,
                    action="compute.instance.failed",
                    code="instance-state",
                    details={"found": instance.state, "reason": "deadline"},
                )
            except (Conflict, NotFound):
                continue
        moved += 1
    return moved


def quarantine_purge(*, now: datetime | None = None) -> int:
    """Delete the files in ``QUARANTINE_DIR`` last modified more than ``QUARANTINE_HOURS`` ago; returns how many.

    Only regular files directly in the directory (no symbolic links, no subdirectories). One audit entry per run
    that deleted something, naming the files."""
    now = now or timezone.now()
    directory = Path(settings.QUARANTINE_DIR)
    cutoff = (now - timedelta(hours=settings.QUARANTINE_HOURS)).timestamp()
    deleted: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in sorted(entries, key=lambda e: e.name):
        info = entry.stat(follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode) or info.st_mtime >= cutoff:
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            continue  # another run got it first
        deleted.append(entry.name)
    if deleted:
        with transaction.atomic():
            audit.record(None, "compute.quarantine.purged", None, files=deleted, hours=settings.QUARANTINE_HOURS)
        logger.info("purged %d quarantined disks: %s", len(deleted), ", ".join(deleted))
    return len(deleted)


def reconcile_hosts() -> list[Host]:
    """The hosts a reconciliation run visits: every enabled one (in maintenance too: its VMs still run)."""
    return list(Host.objects.filter(enabled=True).order_by("pk"))
