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
from django.db.models import DecimalField, ExpressionWrapper, F, FilteredRelation, Q, Sum
from django.db.models.functions import Coalesce

from compute.models import LIVE_STATES, Host, Instance, InstanceType
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


# How many of the best-ranked hosts one ranking offers, and how many times a placement ranks again when every
# host it offered filled up under concurrent placements before it could lock one.
PLACE_CANDIDATES = 20
PLACE_ROUNDS = 5


def _ranked(instance_type: InstanceType) -> list[int]:
    """The ids of the candidate hosts with room for ``instance_type``, best first by the strategy: one query
    that sums the live instances per host in the database (no rows of hosts or instances come to Python)."""
    room = (
        _candidates()
        # Joined on the live instances only (the ``instance_live_per_host`` index): the terminated ones, most
        # of a site's history, are never read.
        .annotate(live=FilteredRelation("instances", condition=Q(instances__state__in=LIVE_STATES)))
        .annotate(vcpus_used=Coalesce(Sum("live__vcpus"), 0), ram_used=Coalesce(Sum("live__ram_mib"), 0))
        .annotate(
            vcpus_free=ExpressionWrapper(
                F("vcpus") * F("cpu_allocation_ratio") - F("vcpus_used"), output_field=DecimalField()
            ),
            ram_free=ExpressionWrapper(
                F("ram_mib") * F("ram_allocation_ratio") - F("ram_used"), output_field=DecimalField()
            ),
        )
        .filter(vcpus_free__gte=instance_type.vcpus, ram_free__gte=instance_type.ram_mib)
    )
    order = ["ram_free", "pk"] if settings.SCHEDULER_STRATEGY == "pack" else ["-ram_free", "pk"]
    return list(room.order_by(*order).values_list("pk", flat=True)[:PLACE_CANDIDATES])


def _lock_if_room(host_id: int, instance_type: InstanceType, *, wait: bool) -> Host | None:
    """Lock candidate host ``host_id`` and count its room again under the lock; the host if the instance
    fits. Without ``wait`` a host another placement holds is passed over. A host that does not fit (any more)
    is unlocked again (its savepoint is rolled back)."""
    savepoint = transaction.savepoint()
    host = _candidates().select_for_update(skip_locked=not wait).filter(pk=host_id).first()
    if host is not None and _room([host])[0].fits(instance_type) >= 1:
        transaction.savepoint_commit(savepoint)
        return host
    transaction.savepoint_rollback(savepoint)
    return None


def place(*, instance_type: InstanceType) -> Host:
    """The host a new instance of ``instance_type`` goes to, or :class:`Conflict` (``no-host``) saying why
    none can take it.

    Precondition: inside the caller's transaction, which must create the instance on the returned host
    before it commits. The returned host stays locked until then, and its room is counted again once the
    lock is held, so concurrent placements on the same host count each other's instances and no host is
    filled past its room. Only that one host is locked: the hosts are ranked without locks, and a
    placement takes the best one no other placement holds (waiting for them in turn when all are held)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("place() must run inside transaction.atomic()")
    for _round in range(PLACE_ROUNDS):
        ranked = _ranked(instance_type)
        if not ranked:
            break
        for wait in (False, True):
            for host_id in ranked:
                host = _lock_if_room(host_id, instance_type, wait=wait)
                if host is not None:
                    return host
    raise Conflict(_why_nothing_fits(instance_type), code="no-host")


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
