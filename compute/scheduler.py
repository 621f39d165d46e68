"""Placement (DESIGN §4): which host a new instance runs on, and how many more of each type fit.

A host is a candidate when it is enabled, not in maintenance and ``up``. Its room is its capacity times
its allocation ratio (overcommit) minus what its live instances use. ``SCHEDULER_STRATEGY`` weighs the
hosts with room: ``spread`` puts the instance where most RAM is free, ``pack`` where least is."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from django.conf import settings
from django.db import transaction
from django.db.models import Sum

from compute.models import Host, Instance, InstanceType
from core.errors import Conflict


@dataclass(frozen=True)
class HostRoom:
    host: Host
    vcpus_free: float
    ram_mib_free: float

    def fits(self, instance_type: InstanceType) -> int:
        """How many more instances of ``instance_type`` fit on this host."""
        if self.vcpus_free < 0 or self.ram_mib_free < 0:
            return 0
        return min(
            math.floor(self.vcpus_free / instance_type.vcpus), math.floor(self.ram_mib_free / instance_type.ram_mib)
        )


def _candidates():
    return Host.objects.filter(enabled=True, maintenance=False, state="up")


def _room(hosts: Iterable[Host], *, empty: bool = False) -> list[HostRoom]:
    """Each host's free capacity, from one query over the live instances on them."""
    hosts = list(hosts)
    used: dict[int, tuple[int, int]] = {}
    if not empty and hosts:
        rows = (
            Instance.objects.live()
            .filter(host__in=[h.pk for h in hosts])
            .values("host")
            .annotate(vcpus=Sum("vcpus"), ram_mib=Sum("ram_mib"))
            .order_by()
        )
        used = {row["host"]: (row["vcpus"] or 0, row["ram_mib"] or 0) for row in rows}
    rooms = []
    for host in hosts:
        vcpus, ram = used.get(host.pk, (0, 0))
        rooms.append(
            HostRoom(
                host=host,
                vcpus_free=float(host.vcpus * host.cpu_allocation_ratio) - vcpus,
                ram_mib_free=float(host.ram_mib * host.ram_allocation_ratio) - ram,
            )
        )
    return rooms


def _why_nothing_fits(instance_type: InstanceType) -> str:
    counts = {"full": 0, "in maintenance": 0, "down": 0, "disabled": 0}
    for enabled, maintenance, state in Host.objects.values_list("enabled", "maintenance", "state"):
        if not enabled:
            counts["disabled"] += 1
        elif maintenance:
            counts["in maintenance"] += 1
        elif state != "up":
            counts["down"] += 1
        else:
            counts["full"] += 1
    if not any(counts.values()):
        return f"no host has room for {instance_type.name}: no host is registered"
    parts = [
        f"{n} {'host' if n == 1 else 'hosts'} full" if what == "full" else f"{n} {what}"
        for what, n in counts.items()
        if n
    ]
    return f"no host has room for {instance_type.name}: {', '.join(parts)}"


def place(*, instance_type: InstanceType) -> Host:
    """The host a new instance of ``instance_type`` goes to, or :class:`Conflict` (``no-host``) saying why
    none can take it.

    Precondition: inside the caller's transaction, which must create the instance on the returned host
    before it commits. The candidate hosts stay locked (in primary-key order) until then, so concurrent
    placements count each other's instances and no host is filled past its room."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("place() must run inside transaction.atomic()")
    hosts = list(_candidates().select_for_update().order_by("pk"))
    fitting = [room for room in _room(hosts) if room.fits(instance_type) >= 1]
    if not fitting:
        raise Conflict(_why_nothing_fits(instance_type), code="no-host")
    strategy = settings.SCHEDULER_STRATEGY
    if strategy == "pack":
        fitting.sort(key=lambda r: (r.ram_mib_free, r.host.pk))
    else:
        fitting.sort(key=lambda r: (-r.ram_mib_free, r.host.pk))
    return fitting[0].host


class TypeRoom(NamedTuple):
    instance_type: InstanceType
    fits_now: int
    fits_when_empty: int


def capacity() -> list[TypeRoom]:
    """Room for VMs: for each active instance type, how many more fit on the cluster now, out of how many
    would fit on it empty (candidate hosts only). Two queries; no locks: a snapshot for display."""
    hosts = list(_candidates().order_by("pk"))
    now = _room(hosts)
    empty = _room(hosts, empty=True)
    return [
        TypeRoom(
            instance_type=itype,
            fits_now=sum(room.fits(itype) for room in now),
            fits_when_empty=sum(room.fits(itype) for room in empty),
        )
        for itype in InstanceType.objects.filter(is_active=True)
    ]
