"""Marketplace background tasks: thin wrappers around services."""

from __future__ import annotations

from core.workflow import task
from marketplace import services


@task("marketplace.notify_expiring")
def notify_expiring() -> int:
    """Mail endorsers whose current endorsements expire soon (daily, CELERY_BEAT_SCHEDULE); running it twice
    sends nothing twice. Returns the number of mails sent."""
    return services.endorsement_expiry_notify()
