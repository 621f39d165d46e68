"""What projects use of the compute quotas, counted from their live instances (``accounts.quotas`` calls these
inside its locked reservation, and once per page when projects are listed): ``{project id: usage}``.

:func:`live_usage` counts instances, vCPUs and RAM together in one aggregate query (it is what ``apps.py``
registers); the one-resource counters are the same counts, one at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models import Count, Sum

from compute.models import Instance, Lease, NetworkKind


def _live(project_ids: Sequence[int], usage: Count | Sum) -> dict[int, int]:
    rows = Instance.objects.live().filter(project_id__in=project_ids).values("project_id").annotate(n=usage)
    return {row["project_id"]: int(row["n"] or 0) for row in rows.order_by()}


# The instance resources and how each is counted over a project's live instances.
LIVE_AGGREGATES = {"instances": Count("pk"), "vcpus": Sum("vcpus"), "ram_mib": Sum("ram_mib")}


def live_usage(project_ids: Sequence[int], resources: Sequence[str]) -> dict[int, dict[str, int]]:
    """``{project id: {resource: usage}}`` of the ``resources`` asked among instances, vCPUs and RAM, from one
    aggregate query over the projects' live instances."""
    wanted = {resource: LIVE_AGGREGATES[resource] for resource in resources if resource in LIVE_AGGREGATES}
    if not wanted:
        return {}
    rows = Instance.objects.live().filter(project_id__in=project_ids).values("project_id").annotate(**wanted)
    usage: dict[int, dict[str, int]] = {}
    for row in rows.order_by():
        counted: dict[str, Any] = dict(row)
        usage[counted["project_id"]] = {resource: int(counted[resource] or 0) for resource in wanted}
    return usage


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
