"""Reads of compute data, scoped to the asking user. ``access_*`` fetch *and* authorise: an instance the
actor may not see raises the same :class:`~core.errors.NotFound` as a missing one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FilteredRelation,
    IntegerField,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, Greatest, Least

from accounts.models import Membership, Project
from compute.models import LIVE_STATES, Host, Instance, InstanceState, InstanceType, Lease, Network, UsageRecord
from core.errors import NotFound
from storage.models import Volume


def instance_type_list() -> QuerySet[InstanceType]:
    return InstanceType.objects.filter(is_active=True)


def instance_type_admin_list() -> QuerySet[InstanceType]:
    """Every instance type, offered or retired, with how many live instances use it (staff)."""
    return InstanceType.objects.annotate(
        live_instances=Count("instances", filter=~Q(instances__state=InstanceState.TERMINATED))
    ).order_by("vcpus", "ram_mib", "name")


def instance_type_admin_get(*, name: str) -> InstanceType:
    try:
        return instance_type_admin_list().get(name=name)
    except InstanceType.DoesNotExist:
        raise NotFound("No such instance type.") from None


def instance_list(*, actor: User) -> QuerySet[Instance]:
    """The instances of the projects ``actor`` is a member of, newest first, with what a listing shows.

    Membership is a semi-join (``project IN (the actor's projects)``) rather than a join, so that the database
    can read a page of a large listing off the newest-first index and stop there."""
    return (
        Instance.objects.filter(project__in=Membership.objects.filter(user=actor).values("project"))
        .select_related("project", "instance_type", "host", "lease")
        .prefetch_related("attachments", "port_translations", "firewall_rules")
        .order_by("-created", "-id")
    )


def access_instance(*, actor: User, instance_id: Any) -> Instance:
    """The instance ``instance_id`` (its UUID, as the API names instances) if ``actor`` is a member of its project."""
    try:
        return instance_list(actor=actor).get(uuid=uuid.UUID(str(instance_id)))
    except (Instance.DoesNotExist, ValueError):
        raise NotFound("No such instance.") from None


def host_list() -> QuerySet[Host]:
    """Every host with the count of its live instances (staff pages)."""
    return Host.objects.annotate(live_instances=Count("instances", filter=~Q(instances__state="terminated"))).order_by(
        "pk"
    )


def network_list() -> QuerySet[Network]:
    """Every network with its lease counts (staff pages)."""
    return Network.objects.annotate(
        leases_total=Count("leases"), leases_held=Count("leases", filter=Q(leases__instance__isnull=False))
    ).order_by("pk")


@dataclass(frozen=True)
class UsageHours:
    vcpu_hours: float
    ram_gib_hours: float


def _integer(name: str) -> ExpressionWrapper:
    # A positive integer column as a plain integer, which SQLite accepts in duration arithmetic.
    return ExpressionWrapper(F(name), output_field=IntegerField())


def project_usage_hours(*, project: Project, start: datetime, end: datetime) -> UsageHours:
    """The vCPU-hours and RAM GiB-hours ``project``'s instances ran between ``start`` and ``end``, in one query
    (each usage record counts only its overlap with the period). The caller has checked who may see them."""
    overlap = ExpressionWrapper(
        Least(F("end"), Value(end)) - Greatest(F("start"), Value(start)), output_field=DurationField()
    )
    totals = UsageRecord.objects.filter(project=project, start__lt=end, end__gt=start).aggregate(
        vcpu=Sum(ExpressionWrapper(overlap * _integer("vcpus"), output_field=DurationField())),
        ram=Sum(ExpressionWrapper(overlap * _integer("ram_mib"), output_field=DurationField())),
    )
    vcpu: timedelta = totals["vcpu"] or timedelta(0)
    ram: timedelta = totals["ram"] or timedelta(0)
    return UsageHours(vcpu_hours=vcpu.total_seconds() / 3600, ram_gib_hours=ram.total_seconds() / 3600 / 1024)


# --- the admin console (staff pages; the views check staff before calling these) -------------------------


def host_load_list() -> QuerySet[Host]:
    """Every host with what its live instances use (``vcpus_used``, ``ram_used``, ``live_instances``), in one
    query: joined on the live instances only, as the scheduler counts them."""
    return (
        Host.objects.annotate(live=FilteredRelation("instances", condition=Q(instances__state__in=LIVE_STATES)))
        .annotate(
            vcpus_used=Coalesce(Sum("live__vcpus"), 0),
            ram_used=Coalesce(Sum("live__ram_mib"), 0),
            live_instances=Count("live__id"),
        )
        .order_by("pk")
    )


def access_host(*, host_id: Any) -> Host:
    try:
        return Host.objects.get(pk=host_id)
    except (Host.DoesNotExist, ValueError, TypeError):
        raise NotFound("No such host.") from None


def access_network(*, network_id: Any) -> Network:
    try:
        return network_list().get(pk=network_id)
    except (Network.DoesNotExist, ValueError, TypeError):
        raise NotFound("No such network.") from None


def lease_list(*, network: Network) -> QuerySet[Lease]:
    """The leases of ``network`` in address order of creation, with who holds each (instance, project, owner)."""
    return (
        Lease.objects.filter(network=network)
        .select_related("instance", "instance__project", "instance__created_by")
        .order_by("pk")
    )


def instance_admin_list() -> QuerySet[Instance]:
    """Every instance of the site, newest first, with what the console's listing shows (staff)."""
    return Instance.objects.select_related(
        "project", "created_by", "instance_type", "host", "image", "lease", "lease__network"
    ).order_by("-created", "-id")


def volume_admin_list() -> QuerySet[Volume]:
    """Every volume of the site, newest first, with its project, owner, image and holders (staff)."""
    return (
        Volume.objects.select_related("project", "created_by", "image")
        .prefetch_related("holders")
        .order_by("-created", "-id")
    )


def instance_state_counts() -> dict[str, int]:
    """How many instances of the site are in each state (one grouped query; staff overview)."""
    rows = Instance.objects.values("state").annotate(n=Count("id")).order_by()
    return {row["state"]: row["n"] for row in rows}


def volume_state_counts() -> dict[str, int]:
    """How many volumes of the site are in each state (one grouped query; staff overview)."""
    rows = Volume.objects.values("state").annotate(n=Count("id")).order_by()
    return {row["state"]: row["n"] for row in rows}


def host_status_counts() -> dict[str, int]:
    """How many hosts are ``up``, ``down``, in ``maintenance`` or ``disabled`` (as the hosts page names them)."""
    counts = {"up": 0, "down": 0, "maintenance": 0, "disabled": 0}
    rows = Host.objects.values("enabled", "maintenance", "state").annotate(n=Count("id")).order_by()
    for row in rows:
        status = "disabled" if not row["enabled"] else "maintenance" if row["maintenance"] else row["state"]
        counts[status] = counts.get(status, 0) + row["n"]
    return counts
