"""A change of e-mail address: asked for, mailed to the new address, made when its link is opened."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from accounts import directory
from accounts.emails import email_claim, email_normalise
from accounts.services.mailing import confirmation_max_age, mail_after_commit
from accounts.services.passwords import is_directory_user
from accounts.services.registration import invalid_input
from core import audit
from core.errors import ApplicationError, Conflict, NotFound, Unavailable
from core.workflow import transition

_EMAIL_CHANGE_SALT = "accounts.user.email_change"


def _email_taken(address: str, reason: str) -> Conflict:
    return Conflict(f"email: {reason}", code="email-taken", extra={"errors": {"email": [reason]}})


def user_email_change_request(*, actor: User, email: str) -> str:
    """Mail a confirmation link to ``email``, the address ``actor`` wants instead of the current one.
    Nothing changes until the link is confirmed. Returns the normalised new address."""
    new = email_normalise(email)
    try:
        validate_email(new)
    except ValidationError:
        raise invalid_input({"email": ["enter a valid e-mail address"]}) from None
    if new == email_normalise(actor.email):
        raise invalid_input({"email": ["this is already your e-mail address"]})
    if reason := email_claim(new, user=actor):
        raise _email_taken(new, reason)
    token = signing.dumps({"u": actor.pk, "n": new, "o": actor.email}, salt=_EMAIL_CHANGE_SALT)
    with transaction.atomic():
        mail_after_commit(
            template="email_change_confirm",
            subject="Confirm your new e-mail address",
            to=[new],
            context={"user": actor, "new_email": new, "token": token, "hours": settings.EMAIL_CONFIRMATION_HOURS},
        )
    return new


@dataclass(frozen=True)
class EmailChange:
    user: User
    old: str
    new: str


def email_change_from_token(token: str) -> EmailChange:
    """The change a link asks for. Raises ApplicationError (``link-invalid``, ``link-expired``); a link
    stops working once the account's address differs from the one it was made for."""
    try:
        payload = signing.loads(token, salt=_EMAIL_CHANGE_SALT, max_age=confirmation_max_age())
    except signing.SignatureExpired:
        raise ApplicationError("This confirmation link has expired; ask for a new one.", code="link-expired") from None
    except signing.BadSignature:
        raise ApplicationError("This confirmation link is not valid.", code="link-invalid") from None
    user = User.objects.filter(pk=payload.get("u"), is_active=True).first()
    if user is None:
        raise ApplicationError("This confirmation link is not valid.", code="link-invalid")
    return EmailChange(user=user, old=str(payload.get("o") or ""), new=str(payload.get("n") or ""))


def user_email_change_confirm(*, token: str) -> EmailChange:
    """Give the account the address its link proves the user holds; tell the old address.

    Idempotent: confirming a change that is already made changes nothing. For directory users the
    directory's ``mail`` changes too (as the transaction's last step, so a refusal changes nothing)."""
    change = email_change_from_token(token)
    user = change.user
    if user.email == change.new:
        return change
    if user.email != change.old:
        raise ApplicationError(
            "This link was made for an earlier change of your e-mail address; ask for a new one.",
            code="link-invalid",
        )
    if reason := email_claim(change.new, user=user):
        raise _email_taken(change.new, reason)
    with transaction.atomic():
        try:
            transition(
                User,
                pk=user.pk,
                allowed={"email": [change.old], "is_active": [True]},
                changes={"email": change.new},
                actor=user,
                action=None,  # recorded below with the old and the new address
                code="link-invalid",
            )
        except (Conflict, NotFound):
            raise ApplicationError("This confirmation link is not valid.", code="link-invalid") from None
        user.email = change.new
        audit.record(user, "accounts.user.email_changed", user, old=change.old, new=change.new)
        mail_after_commit(
            template="email_changed_notice",
            subject="Your e-mail address was changed",
            to=[change.old],
            context={"user": user, "old_email": change.old, "new_email": change.new},
        )
        if is_directory_user(user):
            _directory_call(
                lambda: directory.person_set_mail(user.username, mail=change.new), what="the e-mail address"
            )
    return change


def _directory_call(write: Any, *, what: str) -> None:
    try:
        write()
    except directory.DirectoryUnavailable as exc:
        raise Unavailable(
            f"The user directory is unavailable; {what} was not changed. ({exc})", code="directory-unavailable"
        ) from exc
    except directory.DirectoryError as exc:
        raise Unavailable(f"The user directory refused {what}. ({exc})", code="directory-error") from exc
