"""Thin Celery tasks of accounts: each calls one service."""

from __future__ import annotations

from accounts import services
from core.workflow import task

# Beat runs the sync every AUTH_LDAP_SYNC_SECONDS: two quick retries cover a directory restart, and the next
# run is the real retry (retrying for the house's ten minutes would pile runs on top of each other).
SYNC_RETRIES = 2


@task("accounts.directory_sync", max_retries=SYNC_RETRIES)
def directory_sync() -> list[str]:
    """Deactivate directory users who left the access group (every ``AUTH_LDAP_SYNC_SECONDS``); a directory
    that does not answer is asked again a little later, and a refusal fails the run (nobody is changed)."""
    return services.directory_users_sync_attempt()
