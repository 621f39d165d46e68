"""What a project uses of the compute quotas, counted from its live instances (``accounts.quotas`` calls
these inside its locked reservation)."""

from __future__ import annotations

from django.db.models import Sum
from django.db.models.functions import Coalesce

from accounts.models import Project
from compute.models import Instance, Lease, NetworkKind


def instances(project: Project) -> int:
    return Instance.objects.live().filter(project=project).count()


def vcpus(project: Project) -> int:
    return int(Instance.objects.live().filter(project=project).aggregate(n=Coalesce(Sum("vcpus"), 0))["n"])


def ram_mib(project: Project) -> int:
    return int(Instance.objects.live().filter(project=project).aggregate(n=Coalesce(Sum("ram_mib"), 0))["n"])


def public_ips(project: Project) -> int:
    return (
        Lease.objects.filter(network__kind=NetworkKind.PUBLIC, instance__project=project)
        .exclude(instance__state="terminated")
        .count()
    )
