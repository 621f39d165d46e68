"""Template helpers of the key page."""

from __future__ import annotations

from django import template

from marketplace import selectors
from marketplace.models import PgpKey

register = template.Library()


@register.filter
def uids_with_endorsing(key: PgpKey) -> list[tuple[str, bool]]:
    """Each user ID of ``key`` with whether it may endorse (it carries the owner's e-mail)."""
    endorsing = set(selectors.pgp_key_endorsing_uids(key))
    return [(uid, uid in endorsing) for uid in key.uids]
