"""State changes of volumes (DESIGN §5). Every one is a conditional transition (``core.workflow.transition``) and
writes an audit entry; slow work (qemu-img, tgtadm, image downloads) runs in the storage tasks with no transaction
open (``volume_provision``, ``volume_destroy``).

Storage knows no VMs (DESIGN §1): compute reserves a volume for a VM, known here only as an opaque *holder*
string (the instance's UUID), with ``volume_attach_begin`` → hot-plug → ``volume_attach_end``, and gives it back
with ``volume_detach_begin`` → unplug → ``volume_detach_end`` or, when the VM ends, ``volumes_release``. Every
change of a volume's holders locks the volume's row first, so that holders and state always agree."""

from __future__ import annotations

import logging
import math
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from accounts import selectors as account_selectors
from accounts.models import Project
from accounts.quotas import quota_reserve
from core import audit
from core.errors import ApplicationError, Conflict, NotFound, PermanentError, PermissionDenied
from core.workflow import transition
from marketplace.models import Image
from marketplace.policy import Decision, evaluate
from storage import selectors
from storage.backends import Fill, backend_for
from storage.backends.file import volume_lock
from storage.images import image_cache_ensure
from storage.models import (
    HELD_VOLUME_STATES,
    HolderState,
    Volume,
    VolumeBackendName,
    VolumeFormat,
    VolumeHolder,
    VolumeKind,
    VolumeState,
)
from storage.sources import VolumeSource

logger = logging.getLogger(__name__)

GIB = 1024**3
NAME_MAX = 100
HOLDER_MAX = 100
# The states a volume may be deleted from: not while a VM holds it; a volume still being made may be (its
# provisioning step sees the deletion and cleans up after itself).
DELETABLE = (VolumeState.CREATING, VolumeState.AVAILABLE, VolumeState.ERROR)


# --- input ------------------------------------------------------------------------------------------------


def _clean_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > NAME_MAX or any(unicodedata.category(c).startswith("C") for c in name):
        raise ApplicationError(
            f"a volume name is 1 to {NAME_MAX} printable characters, got {name[:NAME_MAX]!r}", code="volume-name"
        )
    return name


def _check_size(size_gib: Any) -> int:
    limit = settings.STORAGE_VOLUME_MAX_GIB
    if isinstance(size_gib, bool) or not isinstance(size_gib, int) or not 1 <= size_gib <= limit:
        raise ApplicationError(f"a volume size must be 1 to {limit} GiB, got {size_gib!r}", code="volume-size")
    return size_gib


def _check_backend(backend: str | None) -> str:
    chosen = backend or settings.STORAGE_DEFAULT_BACKEND
    if chosen not in settings.STORAGE_BACKENDS:
        raise ApplicationError(
            f"this site offers the {', '.join(settings.STORAGE_BACKENDS)} backend(s), not {chosen!r}",
            code="backend-unknown",
        )
    return chosen


def _check_holder(holder: str) -> str:
    if not isinstance(holder, str) or not holder or len(holder) > HOLDER_MAX:
        raise ValueError(f"a holder is a non-empty string of at most {HOLDER_MAX} characters, got {holder!r}")
    return holder


def image_size_gib(image: Image) -> int:
    """The whole GiB a copy of ``image`` needs (its uncompressed size, rounded up)."""
    return max(1, math.ceil(image.bytes / GIB))


def _policy_allows(image: Image, *, actor: Any, what: str) -> Decision:
    """The policy's decision on using ``image`` now; 403 ``policy-denied`` with the failed rules if it refuses."""
    decision = evaluate(image, on_use=True, actor=actor)
    if not decision.allowed:
        raise PermissionDenied(
            f"the site policy refuses image {image.identifier} {what}: {decision.summary}",
            code="policy-denied",
            extra={"rules": [asdict(r) for r in decision.failures]},
        )
    return decision


def _placement(*, volume: Volume) -> None:
    """Fix where ``volume`` lives (file path; IQN and CHAP for iSCSI) from the settings now."""
    if volume.backend == VolumeBackendName.ISCSI:
        volume.format = VolumeFormat.RAW  # tgt exports raw files
        volume.path = str(Path(settings.ISCSI_DIR) / f"{volume.uuid}.raw")
        volume.iqn = f"iqn.{timezone.now():%Y-%m}.{settings.ISCSI_IQN_DOMAIN}:{volume.uuid}"
        if settings.ISCSI_CHAP:
            volume.chap_username = f"alto-{volume.uuid.hex[:16]}"
            volume.chap_secret = secrets.token_urlsafe(12)  # 16 characters: within every initiator's limits
    else:
        volume.format = settings.STORAGE_FILE_FORMAT
        volume.path = str(Path(settings.STORAGE_FILE_DIR) / f"{volume.uuid}.{volume.format}")


def _enqueue(task_name: str, volume_id: int) -> None:
    from storage import tasks  # the tasks import these services

    task = {"create": tasks.volume_create, "delete": tasks.volume_delete}[task_name]
    task.apply_async(kwargs={"volume_id": volume_id}, queue=settings.STORAGE_QUEUE)


def volume_task_on_commit(task_name: str, volume_id: int) -> None:
    """Send the volume's ``create`` or ``delete`` task once the current transaction commits."""
    transaction.on_commit(lambda: _enqueue(task_name, volume_id))


# --- create -----------------------------------------------------------------------------------------------


def volume_create(
    *,
    actor: User,
    project: Project,
    name: str,
    size_gib: int | None,
    kind: str = VolumeKind.PERSISTENT,
    image: Image | None = None,
    backend: str | None = None,
) -> Volume:
    """Request a ``persistent`` volume (empty) or a ``static`` one (a read-only copy of the Marketplace ``disk``
    image ``image``, its size the image's unless a larger ``size_gib`` is given). The volume is ``creating``; the
    task ``storage.volume_create`` makes it on its backend (→ ``available``, or ``error`` with the reason).

    Errors: NotFound (not a member of ``project``), ApplicationError (bad input), PermissionDenied
    ``policy-denied`` (static: the site policy refuses the image), QuotaExceeded. Nothing is written on error."""
    project = account_selectors.access_project(actor=actor, project_id=project.pk)
    name = _clean_name(name)
    backend = _check_backend(backend)
    allowed_by: list[dict[str, str]] = []
    if kind == VolumeKind.STATIC:
        if image is None:
            raise ApplicationError("a static volume is a copy of a Marketplace image: name it", code="image-required")
        if image.kind != "disk":
            raise ApplicationError(
                f"image {image.identifier} is a {image.kind or 'machine'} image; static volumes copy disk images",
                code="image-not-disk",
            )
        needed = image_size_gib(image)
        if size_gib is None:
            size_gib = needed
        elif _check_size(size_gib) < needed:
            raise ApplicationError(
                f"image {image.identifier} needs {needed} GiB; {size_gib} GiB is too small", code="volume-size"
            )
        _check_size(size_gib)
        allowed_by = list(_policy_allows(image, actor=actor, what="for a static volume").allowed_by)
    elif kind == VolumeKind.PERSISTENT:
        if image is not None:
            raise ApplicationError("only static volumes copy an image", code="image-not-allowed")
        _check_size(size_gib)
    else:
        raise ApplicationError(
            f"a volume is persistent or static (volatile disks come with a VM), not {kind!r}", code="volume-kind"
        )
    assert size_gib is not None  # noqa: S101 - checked above, for the type checker

    tx = transaction.atomic(durable=True)
    with tx:
        quota_reserve(project=project, request={"volumes": 1, "volume_gib": size_gib}, within=tx)
        volume = Volume(
            name=name,
            project=project,
            created_by=actor,
            kind=kind,
            size_gib=size_gib,
            backend=backend,
            image=image,
            image_identifier=image.identifier if image is not None else "",
            allowed_by=allowed_by,
            state=VolumeState.CREATING,
        )
        _placement(volume=volume)
        volume.save()
        audit.record(
            actor,
            "storage.volume.requested",
            volume,
            project=project.pk,
            kind=kind,
            size_gib=size_gib,
            backend=backend,
            image=volume.image_identifier,
        )
        volume_task_on_commit("create", volume.pk)
    return volume


def volume_create_volatile(*, project: Project, size_gib: int, holder: str) -> Volume:
    """A volatile disk for the VM ``holder`` (compute's request): born held by it, destroyed when it ends
    (``volumes_release``). Its GiB count against the project's volume GiB quota (not its volume count). Made on
    the file backend (the default backend where the site has none) by ``storage.volume_create``; compute's
    prepare step may call :func:`volume_provision` itself (idempotent; concurrent calls take turns). May run
    inside the caller's transaction."""
    _check_size(size_gib)
    _check_holder(holder)
    # Scratch space belongs on the file backend (made by any worker that sees STORAGE_FILE_DIR, compute's too);
    # a site without it uses its default.
    backend = VolumeBackendName.FILE if "file" in settings.STORAGE_BACKENDS else _check_backend(None)
    tx = transaction.atomic()
    with tx:
        quota_reserve(project=project, request={"volume_gib": size_gib}, within=tx)
        volume = Volume(
            name=f"volatile disk of {holder}"[:NAME_MAX],
            project=project,
            kind=VolumeKind.VOLATILE,
            size_gib=size_gib,
            backend=backend,
            state=VolumeState.CREATING,
        )
        _placement(volume=volume)
        volume.save()
        VolumeHolder.objects.create(volume=volume, holder=holder, state=HolderState.ATTACHED)
        audit.record(
            None,
            "storage.volume.requested",
            volume,
            project=project.pk,
            kind=VolumeKind.VOLATILE,
            size_gib=size_gib,
            backend=backend,
            holder=holder,
        )
        volume_task_on_commit("create", volume.pk)
    return volume


def volume_provision(*, volume_id: int) -> Volume:
    """Make a ``creating`` volume on its backend (the task ``storage.volume_create``), then ``available`` (or
    ``in-use`` when already held: a volatile disk). Idempotent: a volume past ``creating`` is returned as it is.

    A static volume's image is brought into the image cache (verified), the policy evaluated again, and the copy
    made from the cache. No transaction may be open (slow I/O). Raises the backend's TransientError (the task
    retries it); a permanent failure moves the volume to ``error`` and raises ApplicationError."""
    volume = Volume.objects.select_related("image").get(pk=volume_id)
    if volume.state != VolumeState.CREATING:
        return volume
    spec = selectors.volume_spec(volume)
    fill = None
    if volume.kind == VolumeKind.STATIC:
        assert volume.image is not None  # noqa: S101 - a database constraint
        try:
            cached = image_cache_ensure(identifier=volume.image_identifier)
        except PermanentError as exc:
            raise volume_fail(volume_id=volume.pk, message=f"the image could not be cached: {exc}") from None
        decision = evaluate(volume.image, on_use=True, actor=volume.created_by)
        if not decision.allowed:
            raise volume_fail(volume_id=volume.pk, message=f"the site policy refuses the image: {decision.summary}")
        # The decision at the moment of use is the one that counts (DESIGN §2.4): so are the entries that allowed it.
        Volume.objects.filter(pk=volume.pk).update(allowed_by=list(decision.allowed_by))
        image_format = (volume.image.format or "raw").lower()
        if image_format not in VolumeFormat.values:
            raise volume_fail(volume_id=volume.pk, message=f"images in {image_format} format cannot be copied")
        fill = Fill(path=Path(cached.path), format=image_format)
    backend = backend_for(volume.backend)
    with volume_lock(spec.path):
        # Whoever held the lock before may have made it meanwhile.
        if Volume.objects.filter(pk=volume.pk, state=VolumeState.CREATING).exists():
            try:
                backend.create(spec, fill=fill)
            except PermanentError as exc:
                raise volume_fail(volume_id=volume.pk, message=str(exc)) from None
        with transaction.atomic():
            locked = Volume.objects.select_for_update().get(pk=volume.pk)
            if locked.state == VolumeState.CREATING:
                return transition(
                    Volume,
                    pk=volume.pk,
                    allowed={"state": [VolumeState.CREATING]},
                    changes={
                        "state": VolumeState.IN_USE if locked.holders.exists() else VolumeState.AVAILABLE,
                        "state_message": "",
                    },
                    actor=None,
                    action="storage.volume.created",
                    code="volume-state",
                    details={"backend": volume.backend, "path": volume.path, "iqn": volume.iqn},
                )
    if locked.state in (VolumeState.DELETING, VolumeState.DELETED):
        # Deleted while it was being made: what was just made must not outlive it.
        backend.delete(spec)
    return locked


def volume_fail(*, volume_id: int, message: str) -> ApplicationError:
    """Move a volume that could not be made (``creating``) or removed (``deleting``) to ``error`` with
    ``message``; returns the error to raise. A volume that moved on meanwhile keeps its state."""
    with transaction.atomic():
        try:
            transition(
                Volume,
                pk=volume_id,
                allowed={"state": [VolumeState.CREATING, VolumeState.DELETING]},
                changes={"state": VolumeState.ERROR, "state_message": message[:2000]},
                actor=None,
                action="storage.volume.failed",
                code="volume-state",
            )
        except Conflict:
            logger.info("volume %s moved on before its failure was recorded: %s", volume_id, message)
    return ApplicationError(message, code="volume-failed")


# --- delete -----------------------------------------------------------------------------------------------


def volume_delete(*, actor: User, volume: Volume) -> Volume:
    """Delete ``volume`` (the caller has checked the actor may see it): ``deleting``, then the task
    ``storage.volume_delete`` removes it from its backend (→ ``deleted``). A volume a VM holds is refused (409
    ``volume-in-use``) and left untouched. Repeating the delete of a volume being deleted changes nothing."""
    with transaction.atomic():
        locked = Volume.objects.select_for_update().filter(pk=volume.pk).first()
        if locked is None:
            raise NotFound("No such volume.")
        if locked.state in (VolumeState.DELETING, VolumeState.DELETED):
            return locked
        holders = list(locked.holders.values_list("holder", flat=True))
        if holders or locked.state in HELD_VOLUME_STATES:
            raise Conflict(
                f"volume {locked.name} is {locked.state} (held by {', '.join(holders) or 'a VM'}); detach it first",
                code="volume-in-use",
                extra={"attached_to": holders},
            )
        deleting = transition(
            Volume,
            pk=locked.pk,
            allowed={"state": DELETABLE},
            changes={"state": VolumeState.DELETING, "state_message": ""},
            actor=actor,
            action="storage.volume.deleting",
            code="volume-state",
            details={"previous_state": locked.state},
        )
        volume_task_on_commit("delete", locked.pk)
    return deleting


def volume_destroy(*, volume_id: int) -> Volume:
    """Remove a ``deleting`` volume from its backend, then ``deleted`` (the task ``storage.volume_delete``).
    Idempotent. No transaction may be open. A permanent failure moves it to ``error`` (deleting it again retries)."""
    volume = Volume.objects.get(pk=volume_id)
    if volume.state != VolumeState.DELETING:
        return volume
    spec = selectors.volume_spec(volume)
    try:
        with volume_lock(spec.path):  # after a provisioning step still under way, never during it
            backend_for(volume.backend).delete(spec)
    except PermanentError as exc:
        raise volume_fail(volume_id=volume.pk, message=f"deleting failed: {exc}") from None
    with transaction.atomic():
        return transition(
            Volume,
            pk=volume.pk,
            allowed={"state": [VolumeState.DELETING]},
            changes={"state": VolumeState.DELETED, "state_message": ""},
            actor=None,
            action="storage.volume.deleted",
            code="volume-state",
        )


# --- attach and detach (called by compute) ----------------------------------------------------------------


def _locked(volume_id: str, *, project: Project | None = None) -> Volume:
    """The volume ``volume_id`` (its UUID), its row locked; NotFound when missing or (``project`` given) in
    another project. Precondition: inside ``transaction.atomic``."""
    query = Volume.objects.select_for_update(of=("self",)).filter(uuid=selectors.parse_volume_id(volume_id))
    if project is not None:
        query = query.filter(project_id=project.pk)
    volume = query.select_related("image").first()
    if volume is None:
        raise NotFound("No such volume.")
    return volume


def _hold(volume: Volume, holder: str) -> VolumeHolder | None:
    return VolumeHolder.objects.filter(volume=volume, holder=holder).first()


def _change(
    volume: Volume, allowed: Sequence[str], state: str, action: str, *, code: str, message: str = "", **details: Any
) -> Volume:
    return transition(
        Volume,
        pk=volume.pk,
        allowed={"state": allowed},
        changes={"state": state, "state_message": message},
        actor=details.pop("actor", None),
        action=action,
        code=code,
        refusal=lambda row: f"volume {row.name} is {row.state}",
        details=details,
    )


def volume_attach_begin(*, actor: User, project: Project, volume_id: str, holder: str) -> tuple[Volume, VolumeSource]:
    """Reserve the volume ``volume_id`` of ``project`` for the VM ``holder`` before compute hot-plugs it.

    Persistent: ``available`` → ``attaching`` (one VM at a time: a concurrent attach gets 409
    ``volume-unavailable``). Static: allowed while ``available`` or ``in-use`` (it becomes ``in-use``; the policy is
    evaluated again, 403 ``policy-denied``). Volatile: 409 ``volume-unavailable`` (only its own VM holds it).
    Returns the volume and how to reach it. Compute finishes with :func:`volume_attach_end`."""
    _check_holder(holder)
    project = account_selectors.access_project(actor=actor, project_id=project.pk)
    with transaction.atomic():
        volume = _locked(volume_id, project=project)
        if volume.kind == VolumeKind.VOLATILE:
            raise Conflict(f"volume {volume.name} is a VM's volatile disk", code="volume-unavailable")
        if _hold(volume, holder) is not None:
            raise Conflict(f"volume {volume.name} is already attached to {holder}", code="volume-unavailable")
        if volume.kind == VolumeKind.STATIC:
            assert volume.image is not None  # noqa: S101 - a database constraint
            _policy_allows(volume.image, actor=actor, what="for attaching")
            allowed = [VolumeState.AVAILABLE, VolumeState.IN_USE]
            state = VolumeState.IN_USE
        else:
            allowed, state = [VolumeState.AVAILABLE], VolumeState.ATTACHING
        volume = _change(
            volume, allowed, state, "storage.volume.attaching", code="volume-unavailable", actor=actor, holder=holder
        )
        VolumeHolder.objects.create(volume=volume, holder=holder, state=HolderState.ATTACHING)
    return volume, selectors.volume_source(volume)


def _settle_static(volume: Volume, action: str, **details: Any) -> Volume:
    """A static volume is ``in-use`` while anyone holds it, ``available`` once nobody does."""
    if volume.holders.exists():
        audit.record(None, action, volume, **details)
        return volume
    return _change(volume, [VolumeState.IN_USE], VolumeState.AVAILABLE, action, code="volume-state", **details)


def volume_attach_end(*, volume_id: str, holder: str, ok: bool, message: str = "") -> Volume:
    """Record how compute's hot-plug of ``volume_id`` into ``holder`` ended. ``ok``: the hold is ``attached`` and
    a persistent volume ``in-use``. Not ok: the hold is dropped and the volume ``available`` again (its
    ``state_message`` says why). Idempotent: a repeat, or an end for an attach that is no longer in flight,
    changes nothing."""
    with transaction.atomic():
        volume = _locked(volume_id)
        hold = _hold(volume, holder)
        if hold is None or hold.state != HolderState.ATTACHING:
            return volume
        if ok:
            VolumeHolder.objects.filter(pk=hold.pk, state=HolderState.ATTACHING).update(state=HolderState.ATTACHED)
            if volume.kind == VolumeKind.STATIC:
                audit.record(None, "storage.volume.attached", volume, holder=holder)
                return volume
            return _change(
                volume, [VolumeState.ATTACHING], VolumeState.IN_USE, "storage.volume.attached", code="volume-state",
                holder=holder,
            )  # fmt: skip
        hold.delete()
        if volume.kind == VolumeKind.STATIC:
            return _settle_static(volume, "storage.volume.attach_failed", holder=holder, message=message)
        return _change(
            volume, [VolumeState.ATTACHING], VolumeState.AVAILABLE, "storage.volume.attach_failed",
            code="volume-state", message=message, holder=holder,
        )  # fmt: skip


def volume_detach_begin(*, actor: User, project: Project, volume_id: str, holder: str) -> tuple[Volume, VolumeSource]:
    """Start giving the volume ``volume_id`` back from the VM ``holder``: the hold goes ``detaching`` and a
    persistent volume ``in-use`` → ``detaching``. 409 ``volume-not-attached`` when ``holder`` does not hold it
    (attached). Compute finishes with :func:`volume_detach_end`."""
    _check_holder(holder)
    project = account_selectors.access_project(actor=actor, project_id=project.pk)
    with transaction.atomic():
        volume = _locked(volume_id, project=project)
        hold = _hold(volume, holder)
        if hold is None or hold.state != HolderState.ATTACHED:
            raise Conflict(f"volume {volume.name} is not attached to {holder}", code="volume-not-attached")
        if volume.kind == VolumeKind.VOLATILE:
            raise Conflict(f"volume {volume.name} is a VM's volatile disk; it goes with the VM", code="volume-volatile")
        hold.state = HolderState.DETACHING
        hold.save(update_fields=["state"])
        if volume.kind == VolumeKind.STATIC:
            audit.record(actor, "storage.volume.detaching", volume, holder=holder)
        else:
            volume = _change(
                volume, [VolumeState.IN_USE], VolumeState.DETACHING, "storage.volume.detaching",
                code="volume-not-attached", actor=actor, holder=holder,
            )  # fmt: skip
    return volume, selectors.volume_source(volume)


def volume_detach_end(*, volume_id: str, holder: str, ok: bool, message: str = "") -> Volume:
    """Record how compute's unplug ended. ``ok``: the hold is dropped; a persistent volume is ``available``, a
    static one too once nobody holds it. Not ok: the hold is ``attached`` again, the volume ``in-use`` (with
    ``message``). Idempotent."""
    with transaction.atomic():
        volume = _locked(volume_id)
        hold = _hold(volume, holder)
        if hold is None or hold.state != HolderState.DETACHING:
            return volume
        if ok:
            hold.delete()
            if volume.kind == VolumeKind.STATIC:
                return _settle_static(volume, "storage.volume.detached", holder=holder)
            return _change(
                volume, [VolumeState.DETACHING], VolumeState.AVAILABLE, "storage.volume.detached",
                code="volume-state", holder=holder,
            )  # fmt: skip
        hold.state = HolderState.ATTACHED
        hold.save(update_fields=["state"])
        if volume.kind == VolumeKind.STATIC:
            audit.record(None, "storage.volume.detach_failed", volume, holder=holder, message=message)
            return volume
        return _change(
            volume, [VolumeState.DETACHING], VolumeState.IN_USE, "storage.volume.detach_failed",
            code="volume-state", message=message, holder=holder,
        )  # fmt: skip


def volumes_release(*, holder: str) -> None:
    """The VM ``holder`` ended: every hold it had is dropped. Persistent and static volumes become ``available``
    (static: once nobody else holds them) with their data; volatile ones go ``deleting`` and the task
    ``storage.volume_delete`` destroys them. Idempotent."""
    _check_holder(holder)
    volume_ids = list(
        VolumeHolder.objects.filter(holder=holder).order_by("volume_id").values_list("volume_id", flat=True)
    )
    for volume_id in volume_ids:
        with transaction.atomic():
            volume = Volume.objects.select_for_update().get(pk=volume_id)
            deleted, _ = VolumeHolder.objects.filter(volume=volume, holder=holder).delete()
            if not deleted:
                continue
            if volume.kind == VolumeKind.VOLATILE:
                _change(
                    volume, [s for s in VolumeState.values if s not in ("deleting", "deleted")],
                    VolumeState.DELETING, "storage.volume.deleting", code="volume-state", holder=holder,
                    released=True,
                )  # fmt: skip
                volume_task_on_commit("delete", volume.pk)
            elif volume.kind == VolumeKind.STATIC:
                if volume.state == VolumeState.IN_USE:
                    _settle_static(volume, "storage.volume.released", holder=holder)
            elif volume.state in HELD_VOLUME_STATES:
                _change(volume, list(HELD_VOLUME_STATES), VolumeState.AVAILABLE, "storage.volume.released",
                        code="volume-state", holder=holder)  # fmt: skip
