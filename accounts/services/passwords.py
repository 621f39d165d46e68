"""Passwords: set where they are checked, the directory for LDAP users, else the local hash."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from accounts import directory
from core import audit
from core.errors import Unavailable


def is_directory_user(user: User) -> bool:
    """True when ``user`` logs in through LDAP (the local password is unusable and LDAP is on)."""
    return directory.is_configured() and not user.has_usable_password()


def user_password_set(*, actor: Any, user: User, password: str) -> None:
    """Set ``user``'s password where it is checked: the directory for LDAP users, else the local hash."""
    if is_directory_user(user):
        try:
            directory.person_set_password(user.username, password_ssha=directory.ssha_hash(password))
        except directory.DirectoryUnavailable as exc:
            raise Unavailable(
                f"The user directory is unavailable; the password was not changed. ({exc})",
                code="directory-unavailable",
            ) from exc
        except directory.DirectoryError as exc:
            raise Unavailable(f"The user directory refused the new password. ({exc})", code="directory-error") from exc
        with transaction.atomic():
            # A fresh unusable marker changes what password-reset links are derived from, so the link
            # that led here stops working.
            user.set_unusable_password()
            user.save(update_fields=["password"])
            audit.record(actor, "accounts.user.password_changed", user, directory=True)
        return
    with transaction.atomic():
        user.set_password(password)
        user.save(update_fields=["password"])
        audit.record(actor, "accounts.user.password_changed", user, directory=False)
