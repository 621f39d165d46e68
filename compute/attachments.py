"""Volumes in instances (DESIGN §1, §4, §6): attach and detach as compute actions, as Nova does with Cinder.

Storage knows no VMs: compute reserves the volume in storage (``volume_attach_begin``: a conditional update
``available → attaching`` naming the instance's UUID as the holder), keeps the :class:`~compute.models.Attachment`
(the device name, picked free per instance), and a thin task on the host's queue hot-plugs the disk storage
describes (:func:`storage.selectors.volume_source`) through the hypervisor adapter, then tells storage how it went
(``volume_attach_end``). A failed hot-plug returns the volume to ``available`` with the reason. Detaching is the
mirror image; the guest releases a disk asynchronously, so the detach step polls until it is gone.

A worker that dies mid-step loses nothing: the steps are idempotent (``acks_late``), and reconciliation settles an
attachment left ``attaching``/``detaching`` past ``INSTANCE_STEP_DEADLINE_MINUTES`` from the domain's definition
(the disk is there: attached, ``in-use``; it is not: ``available``)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from compute import hypervisor, swap
from compute.domain import DiskSpec, disk_xml, volume_disk
from compute.models import Attachment, AttachmentState, Host, Instance, InstanceState
from core import audit
from core.errors import Conflict
from core.workflow import transition
from storage import selectors as storage_selectors
from storage import services as storage_services
from storage.models import Volume, VolumeState
from storage.sources import VolumeSource

logger = logging.getLogger(__name__)

ATTACH = "compute.volume_attach"
DETACH = "compute.volume_detach"
SETTLE = "compute.attachments_settle"
# Instances a volume may be plugged into or out of: a running guest (hot-plug) or a stopped one (its definition).
PLUGGABLE = (InstanceState.RUNNING, InstanceState.STOPPED)
# CHAP secrets get a UUID derived from the volume, the same on every host, so any worker can find and remove them.
_SECRETS = uuid.UUID("4f9a63a0-5a0e-4d8e-9a57-0c0a1f2b3c5d")
_DEVICE_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def holder(instance: Instance) -> str:
    """How storage knows an instance: its UUID (the instance ``id`` in the API)."""
    return str(instance.uuid)


def _domain(instance: Instance) -> str:
    return f"alto-{instance.uuid}"


def _host(instance: Instance) -> Host:
    if instance.host is None:
        raise Conflict(f"instance {instance.name} has no host", code="instance-no-host")
    return instance.host


# Device names -------------------------------------------------------------------------------------------------


def _device_names() -> list[str]:
    singles = [f"vd{letter}" for letter in _DEVICE_LETTERS]
    doubles = [f"vd{first}{second}" for first in _DEVICE_LETTERS for second in _DEVICE_LETTERS]
    return singles + doubles


BOOT_DEVICES = frozenset({"vda", swap.TARGET})  # the root disk and the swap disk; the seed ISO is on IDE (hdd)


def device_pick(instance: Instance) -> str:
    """The first virtio device name (vdb, vdc, …, vdy, vdaa, …) no disk of ``instance`` uses (``vdz`` is the swap
    disk's, whether or not this instance has one).

    Call with the instance row locked (``select_for_update``): the unique constraint (instance, device) is the
    backstop that refuses a second attachment racing for the same name."""
    taken = BOOT_DEVICES | set(Attachment.objects.filter(instance=instance).values_list("device", flat=True))
    for name in _device_names():
        if name not in taken:
            return name
    raise Conflict(f"instance {instance.name} has no free disk device left", code="no-free-device")


def attachment_add(
    *, instance: Instance, volume: Volume, source: VolumeSource, state: str = AttachmentState.ATTACHING
) -> Attachment:
    """Record ``volume`` in ``instance`` under a free device name (the instance row is locked by the caller)."""
    try:
        with transaction.atomic():
            return Attachment.objects.create(
                instance=instance,
                volume_uuid=volume.uuid,
                device=device_pick(instance),
                read_only=source.read_only,
                state=state,
            )
    except IntegrityError:
        raise Conflict(f"volume {volume.uuid} is attached already", code="volume-unavailable") from None


def _locked(instance: Instance, *, states: tuple[str, ...], verb: str) -> Instance:
    locked = Instance.objects.select_for_update(of=("self",)).select_related("host", "project").get(pk=instance.pk)
    if locked.state not in states:
        raise Conflict(
            f"instance {locked.name} is {locked.state}; volumes are {verb} only while it is " + " or ".join(states),
            code="instance-state",
        )
    return locked


# Actions (the caller has checked the actor may act on the instance) -------------------------------------------


def instance_attach(*, actor: User, instance: Instance, volume_id: Any) -> Attachment:
    """Attach the volume ``volume_id`` (its UUID) to ``instance`` (running: hot-plugged; stopped: in its definition).

    In one transaction: the instance is locked and must be running or stopped; storage moves the volume
    ``available → attaching`` for this instance (or adds a holder to a static one); the attachment takes a free
    device name. The hot-plug runs on the host's queue after commit.

    Errors: NotFound (no such volume, or not visible to ``actor``), Conflict ``instance-state``,
    ``volume-unavailable`` (not available, or a persistent volume already attached), PermissionDenied
    ``policy-denied`` (a static volume's image)."""
    volume_uuid = storage_selectors.parse_volume_id(volume_id)
    with transaction.atomic():
        locked = _locked(instance, states=PLUGGABLE, verb="attached")
        volume, source = storage_services.volume_attach_begin(
            actor=actor, project=locked.project, volume_id=str(volume_uuid), holder=holder(locked)
        )
        attachment = attachment_add(instance=locked, volume=volume, source=source)
        audit.record(
            actor,
            "compute.volume.attaching",
            locked,
            volume=str(volume.uuid),
            device=attachment.device,
            read_only=attachment.read_only,
        )
        _enqueue_on_commit(ATTACH, attachment)
    return attachment


def instance_detach(*, actor: User, instance: Instance, volume_id: Any) -> Attachment:
    """Detach the volume ``volume_id`` from ``instance``: storage moves it ``in-use → detaching``, the attachment
    goes ``attached → detaching``, and the worker unplugs it (waiting for the guest to let go).

    Errors: NotFound (no such volume, or not visible to ``actor``), Conflict ``instance-state``,
    ``volume-not-attached`` (not in this instance, or still attaching), ``volume-volatile`` (a volatile disk lives
    and dies with its instance)."""
    volume_uuid = storage_selectors.parse_volume_id(volume_id)
    with transaction.atomic():
        locked = _locked(instance, states=PLUGGABLE, verb="detached")
        storage_services.volume_detach_begin(
            actor=actor, project=locked.project, volume_id=str(volume_uuid), holder=holder(locked)
        )
        attachment = Attachment.objects.filter(instance=locked, volume_uuid=volume_uuid).first()
        if attachment is None:
            raise Conflict(f"volume {volume_uuid} is not attached to {locked.name}", code="volume-not-attached")
        detaching = transition(
            Attachment,
            pk=attachment.pk,
            allowed={"state": [AttachmentState.ATTACHED]},
            changes={"state": AttachmentState.DETACHING, "state_message": ""},
            actor=actor,
            action="compute.volume.detaching",
            code="volume-not-attached",
            refusal=lambda row: f"volume {row.volume_uuid} is {row.state} in {locked.name}",
            details={"instance": str(locked.uuid), "device": attachment.device},
        )
        _enqueue_on_commit(DETACH, detaching)
    return detaching


def enqueue(step: str, attachment: Attachment) -> None:
    """Send ``step`` for ``attachment`` to its instance's host queue (call after commit)."""
    current_app.send_task(step, args=[attachment.pk], queue=f"host.{_host(attachment.instance).name}")


def _enqueue_on_commit(step: str, attachment: Attachment) -> None:
    transaction.on_commit(lambda: enqueue(step, attachment))


def attachments_at_request(
    *, actor: User, instance: Instance, volume_ids: list[str], volatile_gib: int
) -> list[Attachment]:
    """For a VM being requested (inside the request's transaction): reserve the volumes named (attached at boot,
    in the domain XML from the start) and order a volatile disk of ``volatile_gib`` GiB from storage (born held
    by the instance, counted against the volume GiB quota). Errors as :func:`instance_attach`."""
    added = []
    for volume_id in volume_ids:
        volume, source = storage_services.volume_attach_begin(
            actor=actor, project=instance.project, volume_id=volume_id, holder=holder(instance)
        )
        added.append(attachment_add(instance=instance, volume=volume, source=source))
    if volatile_gib:
        volatile = storage_services.volume_create_volatile(
            project=instance.project, size_gib=volatile_gib, holder=holder(instance)
        )
        source = storage_selectors.volume_source(volatile)
        added.append(attachment_add(instance=instance, volume=volatile, source=source, state=AttachmentState.ATTACHED))
    return added


# Worker steps -------------------------------------------------------------------------------------------------


def _get(attachment_id: int) -> Attachment | None:
    return Attachment.objects.select_related("instance__host").filter(pk=attachment_id).first()


def _secret_uuid(volume_uuid: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_SECRETS, str(volume_uuid))


def attachment_disk(attachment: Attachment, source: VolumeSource) -> DiskSpec:
    """The disk of ``attachment`` as the domain XML names it; the serial is the volume's UUID, shortened to the 20
    characters virtio keeps (the guest finds it as /dev/disk/by-id/virtio-<serial>)."""
    chap = _secret_uuid(attachment.volume_uuid) if source.backend == "iscsi" and source.chap_secret else None
    return volume_disk(source, target=attachment.device, serial=attachment.volume_uuid.hex[:20], chap_secret_uuid=chap)


def _source_name(disk: DiskSpec) -> str:
    return disk.path or "" if disk.source == "file" else f"{disk.iqn}/{disk.lun}"


def attachment_prepare(attachment: Attachment) -> DiskSpec:
    """What the host needs before the disk of ``attachment`` can be plugged: the CHAP secret of an iSCSI target
    (defined on the host, never in the domain XML). Returns the disk."""
    volume = Volume.objects.get(uuid=attachment.volume_uuid)
    source = storage_selectors.volume_source(volume)
    disk = attachment_disk(attachment, source)
    if disk.chap_secret_uuid is not None and source.chap_secret is not None and source.iqn is not None:
        hypervisor.secret_ensure(
            _host(attachment.instance).uri,
            uuid=disk.chap_secret_uuid,
            usage=source.iqn,
            value=source.chap_secret.encode(),
        )
    return disk


def boot_attachments(instance: Instance) -> list[Attachment]:
    """The attachments of ``instance`` that its domain definition carries from the start: all but those on their way
    out. Read once by the boot step for both :func:`boot_disks` and :func:`boot_settle`."""
    return list(Attachment.objects.filter(instance=instance).exclude(state=AttachmentState.DETACHING))


def boot_disks(instance: Instance, found: list[Attachment] | None = None) -> list[DiskSpec]:
    """The disks of the volumes in ``instance`` that its domain definition carries from the start (``found``, as
    :func:`boot_attachments` read them, or read now), each ready on the host (a volatile disk still being made is made
    now; CHAP secrets are defined). Called by the boot step before the domain is defined."""
    disks = []
    for attachment in boot_attachments(instance) if found is None else found:
        volume = Volume.objects.get(uuid=attachment.volume_uuid)
        if volume.state == VolumeState.CREATING:
            storage_services.volume_provision(volume_id=volume.pk)
        disks.append(attachment_prepare(attachment))
    return disks


def boot_settle(instance: Instance, found: list[Attachment] | None = None) -> None:
    """The domain is defined with its volumes: the ones reserved at the request are attached now. With ``found`` (the
    attachments the definition carries, :func:`boot_attachments`), those of them that were attaching; else every
    attaching one, read now."""
    if found is None:
        attaching = list(
            Attachment.objects.filter(instance=instance, state=AttachmentState.ATTACHING).values_list("pk", flat=True)
        )
    else:
        attaching = [a.pk for a in found if a.state == AttachmentState.ATTACHING]
    for attachment_id in attaching:
        attach_settle(attachment_id, ok=True)


def volume_attach_apply(attachment_id: int) -> bool:
    """For an attachment ``attaching``: plug its disk into the domain (live and definition), then settle it
    ``attached`` and the volume ``in-use``. False when there is nothing to do. Hypervisor errors propagate: the
    task retries transient ones and settles the attachment as failed (:func:`attach_settle`) otherwise."""
    attachment = _get(attachment_id)
    if attachment is None or attachment.state != AttachmentState.ATTACHING:
        return False
    disk = attachment_prepare(attachment)
    hypervisor.domain_disk_attach(_host(attachment.instance).uri, _domain(attachment.instance), disk_xml(disk))
    attach_settle(attachment_id, ok=True)
    return True


def attach_settle(attachment_id: int, *, ok: bool, message: str = "") -> None:
    """End an attach: ``attaching → attached`` and the volume ``in-use`` when ``ok``; else the attachment is removed
    and the volume back ``available`` with ``message``. One that moved meanwhile is left alone."""
    with transaction.atomic():
        attachment = Attachment.objects.select_related("instance").filter(pk=attachment_id).first()
        if attachment is None or attachment.state != AttachmentState.ATTACHING:
            return
        details = {"volume": str(attachment.volume_uuid), "device": attachment.device}
        if ok:
            transition(
                Attachment,
                pk=attachment.pk,
                allowed={"state": [AttachmentState.ATTACHING]},
                changes={"state": AttachmentState.ATTACHED, "state_message": ""},
                actor=None,
                action=None,
                code="attachment-state",
            )
            audit.record(None, "compute.volume.attached", attachment.instance, **details)
        else:
            if not Attachment.objects.filter(pk=attachment.pk, state=AttachmentState.ATTACHING).delete()[0]:
                return
            audit.record(None, "compute.volume.attach_failed", attachment.instance, message=message, **details)
        storage_services.volume_attach_end(
            volume_id=str(attachment.volume_uuid), holder=holder(attachment.instance), ok=ok, message=message
        )


def volume_detach_apply(attachment_id: int) -> bool:
    """For an attachment ``detaching``: unplug its disk from the definition and ask the guest to let go. True when
    it is gone (the attachment removed, the volume ``available``) or there is nothing to do; False while the guest
    still holds it (ask again)."""
    attachment = _get(attachment_id)
    if attachment is None or attachment.state != AttachmentState.DETACHING:
        return True
    volume = Volume.objects.get(uuid=attachment.volume_uuid)
    disk = attachment_disk(attachment, storage_selectors.volume_source(volume))
    uri = _host(attachment.instance).uri
    if not hypervisor.domain_disk_detach(
        uri, _domain(attachment.instance), target=attachment.device, source=_source_name(disk)
    ):
        return False
    detach_settle(attachment_id, ok=True)
    if disk.chap_secret_uuid is not None and not _used_on_host(attachment):
        hypervisor.secret_remove(uri, uuid=disk.chap_secret_uuid)
    return True


def _used_on_host(attachment: Attachment) -> bool:
    return Attachment.objects.filter(
        volume_uuid=attachment.volume_uuid, instance__host=attachment.instance.host
    ).exists()


def volume_detach_restore(attachment_id: int, *, message: str) -> None:
    """The guest did not let go of the disk in time: put it back in the definition (it is still in the guest) and
    settle the attachment ``attached``, the volume ``in-use``, with ``message``."""
    attachment = _get(attachment_id)
    if attachment is None or attachment.state != AttachmentState.DETACHING:
        return
    disk = attachment_prepare(attachment)
    hypervisor.domain_disk_attach(_host(attachment.instance).uri, _domain(attachment.instance), disk_xml(disk))
    detach_settle(attachment_id, ok=False, message=message)


def detach_settle(attachment_id: int, *, ok: bool, message: str = "") -> None:
    """End a detach: when ``ok`` the attachment is removed and the volume goes ``available`` (a static volume stays
    ``in-use`` while other instances hold it); else ``detaching → attached`` with ``message``."""
    with transaction.atomic():
        attachment = Attachment.objects.select_related("instance").filter(pk=attachment_id).first()
        if attachment is None or attachment.state != AttachmentState.DETACHING:
            return
        details = {"volume": str(attachment.volume_uuid), "device": attachment.device}
        if ok:
            if not Attachment.objects.filter(pk=attachment.pk, state=AttachmentState.DETACHING).delete()[0]:
                return
            audit.record(None, "compute.volume.detached", attachment.instance, **details)
        else:
            transition(
                Attachment,
                pk=attachment.pk,
                allowed={"state": [AttachmentState.DETACHING]},
                changes={"state": AttachmentState.ATTACHED, "state_message": message[:4000]},
                actor=None,
                action=None,
                code="attachment-state",
            )
            audit.record(None, "compute.volume.detach_failed", attachment.instance, message=message, **details)
        storage_services.volume_detach_end(
            volume_id=str(attachment.volume_uuid), holder=holder(attachment.instance), ok=ok, message=message
        )


def attachments_release(instance: Instance) -> None:
    """The instance ended (its domain is gone): forget its attachments and let storage release its volumes
    (persistent and static ones ``available`` with their data, the volatile one destroyed), and remove from its
    host the CHAP secrets no other instance there needs. Idempotent."""
    secrets = _secrets_of(instance)
    with transaction.atomic():
        gone = list(Attachment.objects.filter(instance=instance).values_list("volume_uuid", "device"))
        Attachment.objects.filter(instance=instance).delete()
        if gone:
            audit.record(
                None,
                "compute.volume.released",
                instance,
                volumes={device: str(volume_uuid) for volume_uuid, device in gone},
            )
        storage_services.volumes_release(holder=holder(instance))
    for secret in secrets:
        if not Attachment.objects.filter(volume_uuid=secret.volume_uuid, instance__host=instance.host).exists():
            try:
                hypervisor.secret_remove(_host(instance).uri, uuid=secret.secret_uuid)
            except hypervisor.HypervisorError as exc:
                logger.warning("CHAP secret of volume %s left on the host: %s", secret.volume_uuid, exc)


@dataclass(frozen=True)
class _Secret:
    volume_uuid: uuid.UUID
    secret_uuid: uuid.UUID


def _secrets_of(instance: Instance) -> list[_Secret]:
    if instance.host_id is None:
        return []
    uuids = list(Attachment.objects.filter(instance=instance).values_list("volume_uuid", flat=True))
    found = []
    for volume in Volume.objects.filter(uuid__in=uuids, backend="iscsi"):
        if volume.chap_secret:
            found.append(_Secret(volume_uuid=volume.uuid, secret_uuid=_secret_uuid(volume.uuid)))
    return found


# Reconciliation -----------------------------------------------------------------------------------------------


@dataclass
class Settled:
    attachment: int
    found: str
    outcome: str


def attachments_settle(*, host_id: int, now: datetime | None = None) -> list[Settled]:
    """Settle the attachments on host ``host_id`` left ``attaching`` or ``detaching`` longer than
    ``INSTANCE_STEP_DEADLINE_MINUTES`` (their worker died, or the message was lost) from the domain's definition:
    the disk is there → attached (volume ``in-use``); it is not → gone (volume ``available``). A host that does
    not answer is left for the next run."""
    now = now or timezone.now()
    cutoff = now - timedelta(minutes=settings.INSTANCE_STEP_DEADLINE_MINUTES)
    stuck = list(
        Attachment.objects.select_related("instance__host")
        .filter(
            instance__host_id=host_id,
            state__in=[AttachmentState.ATTACHING, AttachmentState.DETACHING],
            updated__lt=cutoff,
        )
        .order_by("pk")
    )
    settled: list[Settled] = []
    for attachment in stuck:
        instance = attachment.instance
        uri = _host(instance).uri
        volume = Volume.objects.filter(uuid=attachment.volume_uuid).first()
        disk = attachment_disk(attachment, storage_selectors.volume_source(volume)) if volume else None
        try:
            seen = {
                (info.target, info.source)
                for live in (False, True)
                for info in hypervisor.domain_disks(uri, _domain(instance), live=live)
            }
        except hypervisor.DomainAbsent:
            seen = set()
        except hypervisor.HostUnreachable:
            logger.info("the host of instance %s does not answer: its attachments wait for the next run", instance.pk)
            break
        present = disk is not None and (attachment.device, _source_name(disk)) in seen
        minutes = settings.INSTANCE_STEP_DEADLINE_MINUTES
        try:
            if present:
                # Half plugged (the definition or the guest): finish it, so both agree with what we record.
                hypervisor.domain_disk_attach(uri, _domain(instance), disk_xml(attachment_prepare(attachment)))
        except hypervisor.HypervisorError as exc:
            logger.warning("attachment %s: could not complete the plug (%s); next run", attachment.pk, exc)
            continue
        if attachment.state == AttachmentState.ATTACHING:
            message = "" if present else f"the hot-plug did not finish within {minutes} minutes"
            attach_settle(attachment.pk, ok=present, message=message)
        else:
            message = f"the guest did not release the disk within {minutes} minutes" if present else ""
            detach_settle(attachment.pk, ok=not present, message=message)
        settled.append(
            Settled(attachment=attachment.pk, found=attachment.state, outcome="attached" if present else "gone")
        )
    return settled
