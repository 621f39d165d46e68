"""Thin Celery tasks of accounts: each calls one service."""

from __future__ import annotations

from celery import shared_task

from accounts import services


@shared_task(name="accounts.directory_sync", acks_late=True, reject_on_worker_lost=True)
def directory_sync() -> list[str]:
    """Deactivate directory users who left the access group (every ``AUTH_LDAP_SYNC_SECONDS``)."""
    return services.directory_users_sync()
