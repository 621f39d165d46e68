"""The directory's access group as the judge of who may stay: directory users who left it are deactivated."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from knox.models import AuthToken

from accounts import directory
from core import audit
from core.errors import Unavailable


def directory_users_sync() -> list[str]:
    """Deactivate every active directory user who is no longer in the access group (see
    :func:`directory_users_sync_attempt`). Returns the usernames deactivated.

    Raises Unavailable when the directory cannot be read; then nobody is changed."""
    try:
        return directory_users_sync_attempt()
    except directory.DirectoryFailure as exc:
        raise Unavailable(f"The access group could not be read; nobody was changed. ({exc})") from exc


def directory_users_sync_attempt() -> list[str]:
    """Deactivate every active directory user who is no longer in the access group: their API tokens go,
    a fresh unusable password changes the session hash (so every session of theirs ends) and their
    session rows are deleted. Returns the usernames deactivated. Logging in again after being put back
    in the group reactivates the account (``AUTH_LDAP_USER_FLAGS_BY_GROUP``).

    When the directory cannot be read nobody is changed and the adapter's error comes through as it is:
    ``DirectoryUnavailable`` (transient, so the task asks again later) or ``DirectoryError``."""
    if not directory.is_configured():
        return []
    members = directory.access_group_uids()
    if members is None:
        return []
    candidates = User.objects.filter(is_active=True, password__startswith=UNUSABLE_PASSWORD_PREFIX).order_by("pk")
    gone: list[User] = []
    for user in candidates:
        if user.username.lower() in members:
            continue
        with transaction.atomic():
            user.set_unusable_password()
            changed = User.objects.filter(
                pk=user.pk, is_active=True, password__startswith=UNUSABLE_PASSWORD_PREFIX
            ).update(is_active=False, password=user.password)
            if changed != 1:
                continue  # changed meanwhile (e.g. a local password was set): not a directory user now
            revoked, _ = AuthToken.objects.filter(user=user).delete()
            audit.record(
                None, "accounts.user.deactivated", user, reason="left the directory access group", revoked=revoked
            )
        gone.append(user)
    if gone:
        _sessions_delete(user_ids={str(user.pk) for user in gone})
    return [user.username for user in gone]


def _sessions_delete(*, user_ids: set[str]) -> None:
    """Delete the stored sessions of these users (database sessions only; others end by the hash change)."""
    if settings.SESSION_ENGINE != "django.contrib.sessions.backends.db":
        return
    from django.contrib.sessions.models import Session

    doomed = [
        session.pk
        for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator()
        if str(session.get_decoded().get("_auth_user_id")) in user_ids
    ]
    Session.objects.filter(pk__in=doomed).delete()
