"""What runs from an image, and telling its owners when the image's trust is lost (issue 16).

The Marketplace never imports compute (DESIGN §1): it asks through ``marketplace.usage`` (``InstanceUses`` is
registered in ``ComputeConfig.ready``) and announces an image that turned from allowed to denied with the
``image_trust_lost`` signal, once per ``TrustChange``, after the commit that found it. ``image_trust_lost_notify``
listens: each owner of a VM still running from the image gets one notice (mail and dashboard banner) naming
their VMs, staff one summary, the audit log one line per notice."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Count, QuerySet
from django.utils import timezone

from accounts.services.mailing import mail_after_commit, staff_addresses
from compute.models import Instance, TrustNotice
from core import audit
from core.errors import NotFound
from marketplace.models import TrustChange
from marketplace.usage import ImageUse

WHAT_TO_DO = (
    "Your VMs keep running, but no new VM may start from this image. Save what you need, then terminate them "
    "and start new ones from an image the site allows (the Marketplace shows which)."
)


def _running_from(image_id: int) -> QuerySet[Instance]:
    """The live instances of an image, oldest first, with their owner and project."""
    return (
        Instance.objects.live()
        .filter(image_id=image_id)
        .select_related("created_by", "project")
        .order_by("created", "id")
    )


class InstanceUses:
    """The Marketplace's view of the VMs running from an image (``marketplace.usage`` provider)."""

    def uses(self, image_id: int) -> list[ImageUse]:
        return [
            ImageUse(
                kind="instance",
                id=str(i.uuid),
                name=i.name,
                state=i.state,
                owner=i.created_by.username if i.created_by else "",
                project=i.project.name,
                since=i.created,
                allowed_by=tuple(i.allowed_by or ()),
            )
            for i in _running_from(image_id)
        ]

    def counts(self, image_ids: Iterable[int]) -> dict[int, int]:
        rows = (
            Instance.objects.live()
            .filter(image_id__in=list(image_ids))
            .values("image_id")
            .annotate(n=Count("id"))
            .values_list("image_id", "n")
        )
        return dict(rows)


def image_trust_lost_notify(sender: Any, change: TrustChange, **kwargs: Any) -> list[TrustNotice]:
    """One notice per owner of the VMs running from ``change.image`` (none for VMs already terminated), once per
    change however often it is delivered; a summary to staff. Runs in the delivery's transaction: mails go after
    its commit."""
    image = change.image
    instances = list(_running_from(image.pk))
    by_owner: dict[User, list[Instance]] = {}
    for instance in instances:
        if instance.created_by is not None:
            by_owner.setdefault(instance.created_by, []).append(instance)
    what = TrustChange.Cause(change.cause).label
    title = image.title or image.identifier
    notices = []
    for owner, theirs in by_owner.items():
        names = ", ".join(f"{i.name} ({i.uuid})" for i in theirs)
        message = (
            f"The image {title} ({image.identifier}) is no longer allowed on this site: {what}. "
            f"It runs your VM{'s' if len(theirs) > 1 else ''} {names}. {WHAT_TO_DO}"
        )
        notice, created = TrustNotice.objects.get_or_create(
            change=change,
            user=owner,
            defaults={
                "image_identifier": image.identifier,
                "message": message,
                "instances": [{"id": str(i.uuid), "name": i.name, "project": i.project.name} for i in theirs],
            },
        )
        if not created:
            continue
        notices.append(notice)
        audit.record(
            None,
            "compute.trust.notified",
            notice,
            user=owner.username,
            image=image.identifier,
            cause=change.cause,
            instances=[str(i.uuid) for i in theirs],
        )
        mail_after_commit(
            template_dir="compute/email",
            template="image_trust_lost",
            subject=f"An image your VMs run from is no longer allowed: {title}",
            to=[owner.email],
            context={
                "user": owner,
                "image": image,
                "what": what,
                "summary": change.summary,
                "instances": theirs,
                "what_to_do": WHAT_TO_DO,
            },
        )
    if notices:  # a repeated delivery, whose owners were told already, tells staff nothing new either
        mail_after_commit(
            template_dir="compute/email",
            template="image_trust_lost_staff",
            subject=f"{len(instances)} VM{'s' if len(instances) > 1 else ''} run from an image now denied: {title}",
            to=staff_addresses(),
            context={
                "image": image,
                "what": what,
                "summary": change.summary,
                "instances": instances,
                "owners": len(by_owner),
            },
        )
    return notices


# --- Selectors and services for the owner's notices -------------------------------------------------------------


def trust_notices_open(*, user: Any) -> QuerySet[TrustNotice]:
    """The notices ``user`` has not dismissed, newest first (the dashboard's banner)."""
    if not getattr(user, "is_authenticated", False):
        return TrustNotice.objects.none()
    return TrustNotice.objects.filter(user=user, dismissed__isnull=True).order_by("-created", "-id")


def trust_notice_dismiss(*, actor: User, notice_id: int) -> TrustNotice:
    """Hide one of ``actor``'s notices from the dashboard (another user's: not found). Idempotent."""
    with transaction.atomic():
        notice = TrustNotice.objects.select_for_update().filter(pk=notice_id, user=actor).first()
        if notice is None:
            raise NotFound("No such notice.", code="not_found")
        if notice.dismissed is None:
            notice.dismissed = timezone.now()
            notice.save(update_fields=["dismissed"])
            audit.record(actor, "compute.trust.notice_dismissed", notice)
    return notice
