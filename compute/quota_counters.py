"""What projects use of the compute quotas, counted from their live instances (``accounts.quotas`` calls these
inside its locked reservation, and once per page when projects are listed): ``{project id: usage}``."""

from __future__ import annotations

from collections.abc import Sequence

from django.db.models import Count, Sum

from compute.models import Instance, Lease, NetworkKind


def _live(project_ids: Sequence[int], usage: Count | Sum) -> dict[int, int]:
    rows = Instance.objects.live().filter(project_id__in=project_ids).values("project_id").annotate(n=usage)
    return {row["project_id"]: int(row["n"] or 0) for row in rows.order_by()}


def instances(project_ids: Sequence[int]) -> dict[int, int]:
    return _live(project_ids, Count("pk"))


def vcpus(project_ids: Sequence[int]) -> dict[int, int]:
    return _live(project_ids, Sum("vcpus"))


def ram_mib(project_ids: Sequence[int]) -> dict[int, int]:
    return _live(project_ids, Sum("ram_mib"))


def public_ips(project_ids: Sequence[int]) -> dict[int, int]:
    leases = (
        Lease.objects.filter(network__kind=NetworkKind.PUBLIC, instance__project_id__in=project_ids)
        .exclude(instance__state="terminated")
        .values("instance__project_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {row["instance__project_id"]: int(row["n"]) for row in leases}
