"""System checks of accounts data (``manage.py check --database default``, and ``migrate``): rows that
break "an e-mail names one person" are reported, never changed."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Tags, Warning, register
from django.db import DatabaseError

from accounts.selectors import email_conflicts


@register(Tags.database)
def shared_emails_check(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if not databases:
        return []
    try:
        conflicts = email_conflicts()
    except DatabaseError:  # tables not made yet (before the first migrate)
        return []
    ids = {"users": "accounts.W001", "pending registrations": "accounts.W002"}
    return [
        Warning(
            f"{conflict.email} is shared by the {conflict.kind} {', '.join(conflict.names)}",
            hint="An e-mail address names one person: change the addresses of all but one account"
            if conflict.kind == "users"
            else "Reject all but one of these requests in the registrations console",
            id=ids[conflict.kind],
        )
        for conflict in conflicts
    ]
