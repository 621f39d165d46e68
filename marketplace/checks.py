"""System checks on the Marketplace's stored rows (``manage.py check --database default``, and ``migrate``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.checks import CheckMessage, Tags, register
from django.core.checks import Warning as CheckWarning
from django.db import DatabaseError

# One check id per kind of row that breaks who-may-endorse-as-whom (DESIGN §2.2).
CHECK_IDS = {
    "email-not-owner": "marketplace.W001",
    "endorser-several-accounts": "marketplace.W002",
    "site-key-registered": "marketplace.W003",
}
HINTS = {
    "email-not-owner": "Those entries were accepted before the rule; revoke the key or ask its owner to re-sign.",
    "endorser-several-accounts": "It stays without an account (only the site key may add to it) until an "
    "administrator decides whose the address is and sets Endorser.account.",
    "site-key-registered": "Revoke and remove that key row: the site key belongs to the site only.",
}


@register(Tags.database)
def identity_check(
    app_configs: Sequence[Any] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Stored entries, endorsers and keys that break the endorser-identity rule, one warning per group."""
    if not databases or "default" not in databases:
        return []
    from marketplace.selectors import identity_problems

    try:
        problems = identity_problems()
    except DatabaseError:  # tables not migrated yet: nothing stored to check
        return []
    return [
        CheckWarning(problem.message, hint=HINTS[problem.kind], obj="marketplace", id=CHECK_IDS[problem.kind])
        for problem in problems
    ]
