"""Expiry notices: one mail per endorser whose current endorsements expire soon."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from core import audit
from marketplace import selectors
from marketplace.models import Entry


def endorsement_expiry_notify(*, now: dt.datetime | None = None, within: dt.timedelta | None = None) -> int:
    """Mail each endorser whose current endorsements expire within ``within`` (default
    ``MARKETPLACE_EXPIRY_NOTICE_DAYS``) one message listing the images; returns how many mails were sent.

    Each entry is announced once (``notified_expiry``): running again sends nothing new. Per endorser, the
    entries are claimed under row locks (skipping rows another run holds), mailed, and marked in one
    transaction, so a failed mail leaves them to the next run."""
    now = now or timezone.now()
    within = within or dt.timedelta(days=settings.MARKETPLACE_EXPIRY_NOTICE_DAYS)
    pending: dict[int, list[int]] = {}
    for entry_id, endorser_id in selectors.entries_expiring(now=now, within=within).values_list("id", "endorser_id"):
        pending.setdefault(endorser_id, []).append(entry_id)
    sent = 0
    for ids in pending.values():
        with transaction.atomic():
            claimed = list(
                Entry.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(pk__in=ids, notified_expiry__isnull=True)
                .select_related("image", "endorser")
                .defer("raw", "details", "search_text", "description")
                .order_by("valid_until", "pk")
            )
            if not claimed:
                continue
            endorser = claimed[0].endorser
            images = [
                {
                    "identifier": e.image.identifier,
                    "title": e.title or e.image.title,
                    "valid_until": e.valid_until,
                    "url": settings.SITE_URL + reverse("marketplace-image", args=[e.image.identifier]),
                }
                for e in claimed
            ]
            context = {"endorser": endorser, "images": images, "site_name": settings.SITE_NAME}
            count = len(images)
            send_mail(
                subject=f"[{settings.SITE_NAME}] {count} Marketplace endorsement{'s' if count != 1 else ''} "
                "expire soon",
                message=render_to_string("marketplace/email/expiring.txt", context),
                from_email=None,
                recipient_list=[endorser.email],
            )
            Entry.objects.filter(pk__in=[e.pk for e in claimed]).update(notified_expiry=now)
            audit.record(
                None,
                "marketplace.expiry.notified",
                endorser,
                email=endorser.email,
                identifiers=[i["identifier"] for i in images],
            )
        sent += 1
    return sent
