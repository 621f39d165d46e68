"""Reads of compute data, scoped to the asking user. ``access_*`` fetch *and* authorise: an instance the
actor may not see raises the same :class:`~core.errors.NotFound` as a missing one."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Count, Q, QuerySet

from compute.models import Host, Instance, InstanceType, Network
from core.errors import NotFound


def instance_type_list() -> QuerySet[InstanceType]:
    return InstanceType.objects.filter(is_active=True)


def instance_list(*, actor: User) -> QuerySet[Instance]:
    """The instances of the projects ``actor`` is a member of, newest first, with what a listing shows."""
    return (
        Instance.objects.filter(project__memberships__user=actor)
        .select_related("project", "instance_type", "host", "lease")
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
