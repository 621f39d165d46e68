"""Thin Celery tasks of accounts: each calls one service."""

from __future__ import annotations

from accounts import services
from core.workflow import task


@task("accounts.directory_sync")
def directory_sync() -> list[str]:
    """Deactivate directory users who left the access group (every ``AUTH_LDAP_SYNC_SECONDS``); a directory
    that does not answer is asked again with backoff, and a refusal fails the run (nobody is changed)."""
    return services.directory_users_sync_attempt()
