"""Delivering trust changes (an image turned from allowed to denied) to the apps above the Marketplace."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from marketplace.models import TrustChange
from marketplace.signals import image_trust_lost

log = logging.getLogger(__name__)


def trust_changes_deliver(*, limit: int = 500) -> int:
    """Send ``image_trust_lost`` for each undelivered change, oldest first, each in its own transaction with the
    row locked (two deliveries at once never send one change twice); a change whose listeners fail stays
    undelivered for the next run and does not hold up the others. Returns how many were delivered."""
    pending = list(
        TrustChange.objects.filter(delivered__isnull=True).order_by("pk").values_list("pk", flat=True)[:limit]
    )
    delivered = 0
    for pk in pending:
        try:
            with transaction.atomic():
                change = (
                    TrustChange.objects.select_for_update(skip_locked=True, of=("self",))
                    .select_related("image")
                    .filter(pk=pk, delivered__isnull=True)
                    .first()
                )
                if change is None:  # another delivery has it, or has sent it
                    continue
                image_trust_lost.send(sender=TrustChange, change=change)
                TrustChange.objects.filter(pk=pk).update(delivered=timezone.now())
        except Exception:
            log.exception("trust change %s: a listener failed; it stays undelivered for the next run", pk)
            continue
        delivered += 1
    return delivered
