"""Reads of volumes, scoped to the asking user. ``access_volume`` fetches *and* authorises: a volume the actor
may not see raises the same :class:`~core.errors.NotFound` as a missing one. Compute reads through these too:
``volume_source`` (how a VM reaches a volume) and ``volumes_held_by`` (what a VM holds)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Count, QuerySet

from core.errors import NotFound
from marketplace.usage import ImageUse
from storage.backends import VolumeSpec, backend_for
from storage.models import Volume, VolumeKind
from storage.sources import VolumeSource


def volumes_visible_to(user: User) -> QuerySet[Volume]:
    """The volumes of the projects ``user`` is a member of, newest first, with their holders (the API list)."""
    return (
        Volume.objects.filter(project__memberships__user=user)
        .select_related("project")
        .prefetch_related("holders")
        .order_by("-created", "-id")
    )


def parse_volume_id(volume_id: Any) -> uuid.UUID:
    """A volume's API id (its UUID); anything else is a volume that does not exist."""
    try:
        return uuid.UUID(str(volume_id))
    except ValueError:
        raise NotFound("No such volume.") from None


def access_volume(*, actor: User, volume_id: Any) -> Volume:
    """The volume ``volume_id`` (its UUID) if ``actor`` is a member of its project."""
    try:
        return volumes_visible_to(actor).get(uuid=parse_volume_id(volume_id))
    except Volume.DoesNotExist:
        raise NotFound("No such volume.") from None


def volume_spec(volume: Volume) -> VolumeSpec:
    """What the backend is told about ``volume``: what its row fixed when it was made."""
    return VolumeSpec(
        uuid=str(volume.uuid),
        size_gib=volume.size_gib,
        format=volume.format,
        path=Path(volume.path),
        read_only=volume.read_only,
        iqn=volume.iqn,
        chap_username=volume.chap_username,
        chap_secret=volume.chap_secret,
    )


def volume_source(volume: Volume) -> VolumeSource:
    """How a VM reaches ``volume`` (a file path, or an iSCSI portal, IQN and LUN with CHAP when set)."""
    return backend_for(volume.backend).source(volume_spec(volume))


def volumes_held_by(holder: str) -> list[Volume]:
    """The volumes the VM ``holder`` holds (attached, attaching or detaching), oldest hold first."""
    return list(
        Volume.objects.filter(holders__holder=holder).prefetch_related("holders").order_by("holders__created", "pk")
    )


def volume_holders(volume: Volume) -> list[str]:
    """The holder strings (instance ids) of ``volume``, from its prefetched holders when there."""
    return [h.holder for h in volume.holders.all()]


class StaticVolumeUses:
    """The Marketplace's view of the static volumes copied from an image (``marketplace.usage`` provider,
    registered in ``StorageConfig.ready``): those not deleted, with their holders' count as their state."""

    def _live(self) -> QuerySet[Volume]:
        return Volume.objects.live().filter(kind=VolumeKind.STATIC)

    def uses(self, image_id: int) -> list[ImageUse]:
        volumes = self._live().filter(image_id=image_id).select_related("created_by", "project").order_by("created")
        return [
            ImageUse(
                kind="volume",
                id=str(v.uuid),
                name=v.name,
                state=v.state,
                owner=v.created_by.username if v.created_by else "",
                project=v.project.name,
                since=v.created,
                allowed_by=tuple(v.allowed_by or ()),
            )
            for v in volumes
        ]

    def counts(self, image_ids: Iterable[int]) -> dict[int, int]:
        rows = self._live().filter(image_id__in=list(image_ids)).values("image_id").annotate(n=Count("id"))
        return {row["image_id"]: row["n"] for row in rows}
