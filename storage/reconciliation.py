"""Storage reconciliation (the task ``storage.reconcile``): volumes whose task was lost get it again, and tgtd's
targets are compared with the database (a restarted tgtd has forgotten them all). Each repair is audited."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core import audit
from core.errors import PermanentError
from storage import selectors, services
from storage.models import Volume, VolumeBackendName, VolumeState

logger = logging.getLogger(__name__)


def volumes_resend_stuck(*, now: dt.datetime | None = None) -> list[str]:
    """Send the task of every volume left ``creating`` or ``deleting`` for longer than
    ``STORAGE_STUCK_MINUTES`` again (its message was lost: the broker was down when the request committed).
    Both tasks are idempotent and a volume is made under its file lock, so a task that was only slow loses
    nothing. ``updated`` is stamped with each resend, so a slow one is sent again at most once per period.
    Returns the volumes' ids, each resend audited."""
    now = now or timezone.now()
    before = now - dt.timedelta(minutes=settings.STORAGE_STUCK_MINUTES)
    resent = []
    stuck = Volume.objects.filter(state__in=[VolumeState.CREATING, VolumeState.DELETING], updated__lt=before)
    for volume in stuck.order_by("pk"):
        with transaction.atomic():
            claimed = Volume.objects.filter(pk=volume.pk, state=volume.state, updated=volume.updated).update(
                updated=now
            )
            if not claimed:
                continue  # it moved on meanwhile
            audit.record(None, "storage.volume.resent", volume, state=volume.state)
            services.volume_task_on_commit("create" if volume.state == VolumeState.CREATING else "delete", volume.pk)
        resent.append(str(volume.uuid))
    return resent


# States in which a volume's iSCSI target must exist.
EXPORTED = (VolumeState.AVAILABLE, VolumeState.ATTACHING, VolumeState.IN_USE, VolumeState.DETACHING)


def iscsi_reconcile() -> dict[str, list[str]]:
    """Compare tgtd's targets with the database (the task ``storage.reconcile``): every iSCSI volume that should
    be reachable and is not gets its target back (a restarted tgtd has forgotten them all); the target of a volume
    the database says is ``deleted`` is removed; each repair is audited. Targets of this site no volume accounts
    for are reported, never removed. Returns what it did."""
    from storage.backends import iscsi_backend  # only sites with the iSCSI backend call tgtadm

    backend = iscsi_backend()
    exported = backend.exported()
    restored: list[str] = []
    failed: list[str] = []
    expected = set()
    for volume in Volume.objects.filter(backend=VolumeBackendName.ISCSI, state__in=EXPORTED).order_by("pk"):
        expected.add(volume.iqn)
        if volume.iqn in exported:
            continue
        try:
            backend.restore(selectors.volume_spec(volume))
        except PermanentError as exc:
            failed.append(f"{volume.uuid}: {exc}")
            logger.error("volume %s could not be exported again: %s", volume.uuid, exc)
            continue
        restored.append(str(volume.uuid))
        with transaction.atomic():
            audit.record(None, "storage.volume.target_restored", volume, iqn=volume.iqn)
    prefix = f".{settings.ISCSI_IQN_DOMAIN}:"
    known = dict(
        Volume.objects.filter(
            backend=VolumeBackendName.ISCSI, iqn__in=[i for i in exported if prefix in i]
        ).values_list("iqn", "state")
    )
    removed: list[str] = []
    for volume in Volume.objects.filter(iqn__in=[i for i, state in known.items() if state == VolumeState.DELETED]):
        # A deleted volume's target came back (made again by a run that raced the deletion): the database says
        # the volume is gone, so its target goes too.
        backend.delete(selectors.volume_spec(volume))
        removed.append(str(volume.uuid))
        with transaction.atomic():
            audit.record(None, "storage.volume.target_removed", volume, iqn=volume.iqn)
    unknown = sorted(iqn for iqn in exported if prefix in iqn and iqn not in known)
    for iqn in unknown:
        logger.warning("tgtd exports %s, which no volume accounts for; left alone", iqn)
    return {"restored": restored, "failed": failed, "unknown": unknown, "removed": removed}
