"""Registration: a request submitted, its address confirmed, and the staff's decision (approval writes the
person into the directory as the last step of its transaction, and undoes it if the commit fails)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from cryptography import x509
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts import directory
from accounts.emails import email_claim, email_normalise
from accounts.models import RegistrationRequest
from accounts.services.mailing import confirmation_max_age, mail_after_commit, staff_addresses
from accounts.services.projects import project_personal_ensure
from core import audit
from core.errors import ApplicationError, Conflict, PermissionDenied, Unavailable
from core.workflow import transition

logger = logging.getLogger("accounts.services")

# Used with ``fullmatch``: ``$`` alone also matches before a trailing newline.
USERNAME_PATTERN = re.compile(r"\w{3,20}", re.ASCII)
_RFC4514_SPECIAL = re.compile(r'([,+"\\<>;])')


def _normalise_x509_dn(raw: str) -> str:
    """An X.509 subject DN in RFC 4514 form (``CN=…,O=…,C=…``); OpenSSL's ``/C=…/O=…/CN=…`` form is
    accepted and converted. Raises ValueError when it is not a DN."""
    raw = raw.strip()
    if raw.startswith("/"):
        parts = [p for p in re.split(r"/(?=[A-Za-z][A-Za-z0-9.-]*=)", raw) if p]
        escaped = []
        for part in reversed(parts):
            attr, _, value = part.partition("=")
            value = _RFC4514_SPECIAL.sub(r"\\\1", value)
            escaped.append(f"{attr}={value}")
        raw = ",".join(escaped)
    name = x509.Name.from_rfc4514_string(raw)
    if not len(name):
        raise ValueError("empty DN")
    return name.rfc4514_string()


@dataclass(frozen=True)
class RegistrationInput:
    username: str
    email: str
    first_name: str
    last_name: str
    password: str
    dn: str = ""
    message: str = ""
    accept_terms: bool = False


def registration_errors(data: RegistrationInput) -> tuple[dict[str, list[str]], str]:
    """Every problem with ``data``, by field, and the normalised X.509 DN (DESIGN §3)."""
    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    if not USERNAME_PATTERN.fullmatch(data.username):
        add("username", "use 3 to 20 letters, digits or underscores")
    elif (
        User.objects.filter(username__iexact=data.username).exists()
        or RegistrationRequest.objects.filter(
            username__iexact=data.username, status=RegistrationRequest.Status.PENDING
        ).exists()
    ):
        add("username", "this username is already taken")
    try:
        validate_email(data.email)
    except ValidationError:
        add("email", "enter a valid e-mail address")
    else:
        if reason := email_claim(data.email):
            add("email", reason)
    for field, label in (("first_name", "given name"), ("last_name", "family name")):
        value = getattr(data, field)
        if not value.strip():
            add(field, f"enter your {label}")
        elif len(value) > 150:
            add(field, f"the {label} may have at most 150 characters")
    try:
        candidate = User(username=data.username, email=data.email, first_name=data.first_name, last_name=data.last_name)
        validate_password(data.password, user=candidate)
    except ValidationError as exc:
        for message in exc.messages:
            add("password", message)
    dn = ""
    if data.dn.strip():
        try:
            dn = _normalise_x509_dn(data.dn)
        except ValueError:
            add("dn", "not an X.509 distinguished name (e.g. CN=Ada Lovelace,O=Example,C=UK)")
        else:
            if len(dn) > 500:
                add("dn", "the DN may have at most 500 characters")
    if len(data.message) > 4000:
        add("message", "the message may have at most 4000 characters")
    if data.accept_terms is not True:
        add("accept_terms", "you must accept the terms of use")
    return errors, dn


def invalid_input(errors: dict[str, list[str]]) -> ApplicationError:
    """The refusal of input with ``errors`` by field: the first message, and every one under ``errors``."""
    field, messages = next(iter(errors.items()))
    return ApplicationError(f"{field}: {messages[0]}", code="invalid", extra={"errors": errors})


def registration_submit(*, data: RegistrationInput) -> RegistrationRequest:
    """Record a pending registration and mail the applicant a link to confirm the address. The staff
    are told once the address is confirmed. The password is kept only as hashes: Django's (for a local
    account) and ``{SSHA}`` (for the directory entry)."""
    errors, dn = registration_errors(data)
    if errors:
        raise invalid_input(errors)
    try:
        with transaction.atomic():
            registration = RegistrationRequest.objects.create(
                username=data.username,
                email=email_normalise(data.email),
                first_name=data.first_name.strip(),
                last_name=data.last_name.strip(),
                password_hash=make_password(data.password),
                ldap_password_hash=directory.ssha_hash(data.password),
                dn=dn,
                message=data.message,
            )
            audit.record(None, "accounts.registration.submitted", registration, username=data.username)
            _mail_registration_confirmation(registration, template="registration_received")
    except IntegrityError:
        # Two submissions raced for one username or one address; the constraints let one through.
        if RegistrationRequest.objects.filter(
            email__iexact=data.email, status=RegistrationRequest.Status.PENDING
        ).exists():
            raise invalid_input({"email": [EMAIL_PENDING_MESSAGE]}) from None
        raise invalid_input({"username": ["this username is already taken"]}) from None
    return registration


# --- confirming addresses ---------------------------------------------------------------------------

EMAIL_PENDING_MESSAGE = "a registration with this e-mail address is already waiting for a decision"
_REGISTRATION_SALT = "accounts.registration.email"


def registration_confirmation_token(registration: RegistrationRequest) -> str:
    """The signed token of the link that confirms ``registration``'s address (bound to the request and
    the address; valid for ``EMAIL_CONFIRMATION_HOURS``)."""
    return signing.dumps({"r": registration.pk, "e": registration.email}, salt=_REGISTRATION_SALT)


def _mail_registration_confirmation(registration: RegistrationRequest, *, template: str) -> None:
    mail_after_commit(
        template=template,
        subject="Confirm your e-mail address",
        to=[registration.email],
        context={
            "registration": registration,
            "token": registration_confirmation_token(registration),
            "hours": settings.EMAIL_CONFIRMATION_HOURS,
        },
    )


def registration_from_token(token: str) -> RegistrationRequest:
    """The request a confirmation link names. Raises ApplicationError (``link-invalid``, ``link-expired``)."""
    try:
        payload = signing.loads(token, salt=_REGISTRATION_SALT, max_age=confirmation_max_age())
    except signing.SignatureExpired:
        raise ApplicationError("This confirmation link has expired; ask for a new one.", code="link-expired") from None
    except signing.BadSignature:
        raise ApplicationError("This confirmation link is not valid.", code="link-invalid") from None
    registration = RegistrationRequest.objects.filter(pk=payload.get("r"), email=payload.get("e")).first()
    if registration is None:
        raise ApplicationError("This confirmation link is not valid.", code="link-invalid")
    return registration


def registration_email_confirm(*, token: str) -> RegistrationRequest:
    """Mark the address of the request named by ``token`` confirmed and tell the staff to review it.

    Idempotent: confirming again changes nothing and mails no one. A decided request is not changed."""
    registration = registration_from_token(token)
    with transaction.atomic():
        try:
            current = transition(
                RegistrationRequest,
                pk=registration.pk,
                allowed={
                    "status": [RegistrationRequest.Status.PENDING],
                    "email_confirmed": [None],
                    "email": [registration.email],
                },
                changes={"email_confirmed": timezone.now()},
                actor=None,
                action=None,  # recorded below with the address, as before
                code="registration-decided",
                refusal=_already_decided,
            )
        except Conflict:
            confirmed = RegistrationRequest.objects.get(pk=registration.pk)
            if confirmed.email_confirmed is not None:
                return confirmed
            raise
        audit.record(None, "accounts.registration.email_confirmed", current, email=current.email)
        mail_after_commit(
            template="registration_to_review",
            subject=f"Registration of {current.username} to review",
            to=staff_addresses(),
            context={"registration": current},
        )
    return current


CONFIRMATION_RESEND_ANSWER = (
    "If a registration with this address waits for its confirmation, we have sent the link again. "
    "It works for a limited time."
)


def registration_confirmation_resend(*, email: str) -> None:
    """Mail the confirmation link again to a pending, unconfirmed request for ``email``, if there is one.
    Callers answer the same either way, so the answer tells nothing about who registered."""
    registration = RegistrationRequest.objects.filter(
        email__iexact=email.strip(), status=RegistrationRequest.Status.PENDING, email_confirmed__isnull=True
    ).first()
    if registration is None:
        return
    with transaction.atomic():
        _mail_registration_confirmation(registration, template="registration_confirm_again")


def _already_decided(registration: RegistrationRequest) -> str:
    return f"this registration request is already {registration.status}"


def _registration_decide(*, registration_id: int, actor: User, status: str, reason: str = "") -> RegistrationRequest:
    """Move a pending request to ``status`` (one conditional update, :func:`core.workflow.transition`); the row
    stays locked until the caller's transaction ends. Blanks the kept password hashes. The callers write the
    audit entry, with their own details."""
    return transition(
        RegistrationRequest,
        pk=registration_id,
        allowed={"status": [RegistrationRequest.Status.PENDING]},
        changes={
            "status": status,
            "decided": timezone.now(),
            "decided_by": actor,
            "reason": reason,
            "password_hash": "",
            "ldap_password_hash": "",
        },
        actor=actor,
        action=None,
        code="registration-decided",
        refusal=_already_decided,
    )


def _require_staff(actor: User) -> None:
    if not actor.is_staff:
        raise PermissionDenied("only site administrators decide on registrations")


def registration_approve(*, actor: User, registration: RegistrationRequest) -> RegistrationRequest:
    """Create the account asked for; with LDAP configured, write the person into the directory too.

    All database steps run first in one transaction and the directory write is its last step, so a
    directory that is down or refuses rolls everything back: the request stays pending, no local user
    is left. Should the commit itself fail after the directory write, the entry is deleted again."""
    _require_staff(actor)
    kept_password = registration.password_hash
    kept_ssha = registration.ldap_password_hash
    use_directory = directory.is_configured()
    written_to_directory = False
    try:
        with transaction.atomic():
            decided = _registration_decide(
                registration_id=registration.pk, actor=actor, status=RegistrationRequest.Status.APPROVED
            )
            if decided.email_confirmed is None:
                raise Conflict(
                    f"{decided.email} is not confirmed yet: the applicant has not opened the mailed link",
                    code="email-unconfirmed",
                )
            if User.objects.filter(username__iexact=decided.username).exists():
                raise Conflict(f"the username {decided.username} is taken by now", code="username-taken")
            if reason := email_claim(decided.email, exclude_registration=decided.pk):
                raise Conflict(f"the e-mail address {decided.email} is taken by now: {reason}", code="email-taken")
            user = User(
                username=decided.username,
                email=decided.email,
                first_name=decided.first_name,
                last_name=decided.last_name,
            )
            if use_directory:
                user.set_unusable_password()  # the directory checks the password
            else:
                user.password = kept_password
            user.save()
            RegistrationRequest.objects.filter(pk=decided.pk).update(user=user)
            decided.user = user
            project_personal_ensure(user=user, actor=actor)
            audit.record(
                actor, "accounts.registration.approved", decided, username=user.username, directory=use_directory
            )
            mail_after_commit(
                template="registration_approved",
                subject="Your account is ready",
                to=[decided.email],
                context={"registration": decided},
            )
            if use_directory:
                _directory_write(decided, password_ssha=kept_ssha)
                written_to_directory = True
    except Exception:
        if written_to_directory:
            _directory_undo(registration.username)
        raise
    return decided


def _directory_write(registration: RegistrationRequest, *, password_ssha: str) -> None:
    try:
        directory.person_create(
            uid=registration.username,
            mail=registration.email,
            given_name=registration.first_name,
            family_name=registration.last_name,
            password_ssha=password_ssha,
            x509_dn=registration.dn,
        )
    except directory.DirectoryUnavailable as exc:
        raise Unavailable(
            f"The user directory is unavailable, so the account was not created; the request stays "
            f"pending. Try again later. ({exc})",
            code="directory-unavailable",
        ) from exc
    except directory.DirectoryEntryExists as exc:
        raise Conflict(
            f"the directory already has an entry for {registration.username}", code="directory-entry-exists"
        ) from exc
    except directory.DirectoryError as exc:
        raise Unavailable(
            f"The user directory refused the new entry, so the account was not created; the request stays "
            f"pending. ({exc})",
            code="directory-error",
        ) from exc


def _directory_undo(uid: str) -> None:
    try:
        directory.person_delete(uid)
    except directory.DirectoryFailure:
        logger.exception("could not remove %s from the directory after a failed approval", uid)


def registration_reject(*, actor: User, registration: RegistrationRequest, reason: str = "") -> RegistrationRequest:
    """Refuse a pending request; the applicant is told why."""
    _require_staff(actor)
    with transaction.atomic():
        decided = _registration_decide(
            registration_id=registration.pk, actor=actor, status=RegistrationRequest.Status.REJECTED, reason=reason
        )
        audit.record(actor, "accounts.registration.rejected", decided, username=decided.username, reason=reason)
        mail_after_commit(
            template="registration_rejected",
            subject="Your registration was not accepted",
            to=[decided.email],
            context={"registration": decided},
        )
    return decided
