"""Marketplace background tasks: thin wrappers around services."""

from __future__ import annotations

from core.workflow import task
from marketplace import services
from marketplace.policy import verdicts
from marketplace.services import imagelists, trust


@task("marketplace.notify_expiring")
def notify_expiring() -> int:
    """Mail endorsers whose current endorsements expire soon (daily, CELERY_BEAT_SCHEDULE); running it twice
    sends nothing twice. Returns the number of mails sent."""
    return services.endorsement_expiry_notify()


@task("marketplace.verdicts_refresh")
def verdicts_refresh() -> int:
    """Rewrite the images' stale verdicts (the policy changed, an endorsement expired): after every policy change
    and every few minutes (CELERY_BEAT_SCHEDULE). Running it twice rewrites nothing twice. Returns how many."""
    return verdicts.verdicts_refresh()


@task("marketplace.trust_changes_deliver")
def trust_changes_deliver() -> int:
    """Tell the listeners (compute's notices) of images that turned denied: after each commit that records one,
    and every minute for any a crash left undelivered (CELERY_BEAT_SCHEDULE). Returns how many were delivered."""
    return trust.trust_changes_deliver()


@task("marketplace.imagelists_refresh")
def imagelists_refresh() -> int:
    """Read every subscribed HEPiX image list again and store the new versions (CELERY_BEAT_SCHEDULE); a refused
    list puts its subscription in error and the rest go on. Running it twice stores nothing twice. Returns how many
    lists changed."""
    return sum(1 for outcome in imagelists.imagelists_refresh() if outcome.change in ("new", "updated"))
