"""What projects use of the volume quotas, counted from their volumes (``accounts.quotas`` calls these inside its
locked reservation): every volume not yet ``deleted`` holds its GiB; volatile disks, which come with a VM, count
in GiB but not in the volume count. ``{project id: usage}``."""

from __future__ import annotations

from collections.abc import Sequence

from django.db.models import Count, Sum

from storage.models import Volume, VolumeKind


def volumes(project_ids: Sequence[int]) -> dict[int, int]:
    rows = (
        Volume.objects.live()
        .filter(project_id__in=project_ids)
        .exclude(kind=VolumeKind.VOLATILE)
        .values("project_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {row["project_id"]: int(row["n"]) for row in rows}


def volume_gib(project_ids: Sequence[int]) -> dict[int, int]:
    rows = Volume.objects.live().filter(project_id__in=project_ids).values("project_id").annotate(n=Sum("size_gib"))
    return {row["project_id"]: int(row["n"] or 0) for row in rows.order_by()}
