"""Marketplace background tasks: thin wrappers around services."""

from __future__ import annotations

from celery import shared_task

from marketplace import services


@shared_task(name="marketplace.notify_expiring", acks_late=True, reject_on_worker_lost=True)
def notify_expiring() -> int:
    """Mail endorsers whose current endorsements expire soon (daily, CELERY_BEAT_SCHEDULE); running it twice
    sends nothing twice. Returns the number of mails sent."""
    return services.endorsement_expiry_notify()
