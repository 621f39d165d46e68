"""State changes of accounts: registration and approval, projects and members, SSH keys, API tokens.

Quotas live in :mod:`accounts.quotas`. Every change writes an audit entry in its transaction; e-mail
goes out after commit.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography import x509
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone
from knox.models import AuthToken

from accounts import directory, emails
from accounts.models import ApiToken, Membership, Project, RegistrationRequest, SshKey
from accounts.quotas import quota_create_default
from accounts.sshkeys import parse_public_key
from core import audit
from core.errors import ApplicationError, Conflict, NotFound, PermissionDenied, Unavailable

logger = logging.getLogger(__name__)

USERNAME_PATTERN = re.compile(r"^\w{3,20}$", re.ASCII)
PERSONAL_PREFIX = "personal-"
PROJECT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,99}$")
_RFC4514_SPECIAL = re.compile(r'([,+"\\<>;])')


# --- e-mail -----------------------------------------------------------------------------------------


def _mail_after_commit(*, template: str, subject: str, to: list[str], context: dict[str, Any]) -> None:
    """Send a plain-text mail rendered from ``accounts/email/<template>.txt`` once the transaction commits.
    A mail server that fails is logged: the decision it reports has been made and stays made."""
    recipients = [address for address in to if address]
    if not recipients:
        return
    body = render_to_string(
        f"accounts/email/{template}.txt", {**context, "site_name": settings.SITE_NAME, "site_url": settings.SITE_URL}
    )

    def send() -> None:
        try:
            send_mail(f"[{settings.SITE_NAME}] {subject}", body, None, recipients)
        except OSError:
            logger.exception("could not send %r to %s", subject, recipients)

    transaction.on_commit(send)


def _staff_addresses() -> list[str]:
    return list(User.objects.filter(is_staff=True, is_active=True).exclude(email="").values_list("email", flat=True))


# --- registration -----------------------------------------------------------------------------------


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

    if not USERNAME_PATTERN.match(data.username):
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
        if reason := emails.email_claim(data.email):
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


def _invalid(errors: dict[str, list[str]]) -> ApplicationError:
    field, messages = next(iter(errors.items()))
    return ApplicationError(f"{field}: {messages[0]}", code="invalid", extra={"errors": errors})


def registration_submit(*, data: RegistrationInput) -> RegistrationRequest:
    """Record a pending registration; tell the applicant and the site's staff. The password is kept
    only as hashes: Django's (for a local account) and ``{SSHA}`` (for the directory entry)."""
    errors, dn = registration_errors(data)
    if errors:
        raise _invalid(errors)
    try:
        with transaction.atomic():
            registration = RegistrationRequest.objects.create(
                username=data.username,
                email=data.email,
                first_name=data.first_name.strip(),
                last_name=data.last_name.strip(),
                password_hash=make_password(data.password),
                ldap_password_hash=directory.ssha_hash(data.password),
                dn=dn,
                message=data.message,
            )
            audit.record(None, "accounts.registration.submitted", registration, username=data.username)
            context = {"registration": registration}
            _mail_after_commit(
                template="registration_received",
                subject="We received your registration",
                to=[registration.email],
                context=context,
            )
            _mail_after_commit(
                template="registration_to_review",
                subject=f"Registration of {registration.username} to review",
                to=_staff_addresses(),
                context=context,
            )
    except IntegrityError:
        # Two submissions raced for one username; the constraint let one through.
        raise _invalid({"username": ["this username is already taken"]}) from None
    return registration


def _registration_decide(*, registration_id: int, actor: User, status: str, reason: str = "") -> RegistrationRequest:
    """Move a pending request to ``status`` with a conditional update that must change exactly one row;
    the row stays locked until the caller's transaction ends. Blanks the kept password hashes."""
    changed = RegistrationRequest.objects.filter(pk=registration_id, status=RegistrationRequest.Status.PENDING).update(
        status=status,
        decided=timezone.now(),
        decided_by=actor,
        reason=reason,
        password_hash="",
        ldap_password_hash="",
    )
    if changed != 1:
        current = RegistrationRequest.objects.filter(pk=registration_id).values_list("status", flat=True).first()
        if current is None:
            raise NotFound("No such registration request.")
        raise Conflict(f"this registration request is already {current}", code="registration-decided")
    return RegistrationRequest.objects.get(pk=registration_id)


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
            if User.objects.filter(username__iexact=decided.username).exists():
                raise Conflict(f"the username {decided.username} is taken by now", code="username-taken")
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
            _mail_after_commit(
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
    except directory.DirectoryError:
        logger.exception("could not remove %s from the directory after a failed approval", uid)


def registration_reject(*, actor: User, registration: RegistrationRequest, reason: str = "") -> RegistrationRequest:
    """Refuse a pending request; the applicant is told why."""
    _require_staff(actor)
    with transaction.atomic():
        decided = _registration_decide(
            registration_id=registration.pk, actor=actor, status=RegistrationRequest.Status.REJECTED, reason=reason
        )
        audit.record(actor, "accounts.registration.rejected", decided, username=decided.username, reason=reason)
        _mail_after_commit(
            template="registration_rejected",
            subject="Your registration was not accepted",
            to=[decided.email],
            context={"registration": decided},
        )
    return decided


# --- passwords --------------------------------------------------------------------------------------


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


# --- projects ---------------------------------------------------------------------------------------


def project_personal_ensure(*, user: User, actor: Any = None) -> Project:
    """The personal project of ``user``, created with the site's default quota if missing (idempotent)."""
    with transaction.atomic():
        existing = Project.objects.filter(personal_owner=user).first()
        if existing is not None:
            return existing
        project = Project.objects.create(
            name=f"{PERSONAL_PREFIX}{user.username}",
            description=f"Personal project of {user.get_full_name() or user.username}",
            personal_owner=user,
        )
        Membership.objects.create(project=project, user=user, role=Membership.Role.MANAGER)
        quota_create_default(project=project)
        audit.record(actor, "accounts.project.created", project, personal=True, owner=user.username)
    return project


def project_create(*, actor: User, name: str, description: str = "", manager: User) -> Project:
    """A shared project with ``manager`` as its first manager and the site's default quota (staff only:
    each project brings its own quota)."""
    if not actor.is_staff:
        raise PermissionDenied("only site administrators create projects")
    if not PROJECT_NAME_PATTERN.match(name) or name.startswith(PERSONAL_PREFIX):
        raise ApplicationError(
            f"name: use 2 to 100 letters, digits, '.', '_' or '-', not starting with '{PERSONAL_PREFIX}'",
            code="invalid",
        )
    try:
        with transaction.atomic():
            project = Project.objects.create(name=name, description=description)
            Membership.objects.create(project=project, user=manager, role=Membership.Role.MANAGER)
            quota_create_default(project=project)
            audit.record(actor, "accounts.project.created", project, personal=False, manager=manager.username)
    except IntegrityError:
        raise Conflict(f"a project named {name} already exists", code="project-exists") from None
    return project


def _lock_memberships(project: Project) -> list[Membership]:
    return list(Membership.objects.select_for_update().filter(project=project).order_by("pk"))


def _refuse_losing_last_manager(memberships: list[Membership], changing: Membership) -> None:
    managers = [m for m in memberships if m.role == Membership.Role.MANAGER]
    if changing.role == Membership.Role.MANAGER and len(managers) == 1:
        raise Conflict("a project keeps at least one manager: make someone else manager first", code="last-manager")


def project_member_add(*, actor: User, project: Project, user: User, role: str) -> Membership:
    """Add ``user`` to ``project`` with ``role``. The caller has checked that ``actor`` manages it."""
    if role not in Membership.Role.values:
        raise ApplicationError(f"role: must be one of {', '.join(Membership.Role.values)}", code="invalid")
    if not user.is_active:
        raise ApplicationError(f"username: {user.username} is not an active account", code="invalid")
    try:
        with transaction.atomic():
            membership = Membership.objects.create(project=project, user=user, role=role)
            audit.record(actor, "accounts.project.member_added", project, user=user.username, role=role)
    except IntegrityError:
        raise Conflict(f"{user.username} is already a member of {project.name}", code="already-member") from None
    return membership


def project_member_set_role(*, actor: User, membership: Membership, role: str) -> Membership:
    """Change a member's role; the last manager cannot be demoted."""
    if role not in Membership.Role.values:
        raise ApplicationError(f"role: must be one of {', '.join(Membership.Role.values)}", code="invalid")
    with transaction.atomic():
        memberships = _lock_memberships(membership.project)
        current = next((m for m in memberships if m.pk == membership.pk), None)
        if current is None:
            raise NotFound("No such member.")
        if current.role == role:
            return current
        if role != Membership.Role.MANAGER:
            _refuse_losing_last_manager(memberships, current)
        before = current.role
        current.role = role
        current.save(update_fields=["role"])
        audit.record(
            actor,
            "accounts.project.member_role_changed",
            current.project,
            user=current.user.username,
            role=[before, role],
        )
    return current


def project_member_remove(*, actor: User, membership: Membership) -> None:
    """Remove a member (managers remove anyone, members may leave); the last manager cannot go."""
    with transaction.atomic():
        memberships = _lock_memberships(membership.project)
        current = next((m for m in memberships if m.pk == membership.pk), None)
        if current is None:
            raise NotFound("No such member.")
        _refuse_losing_last_manager(memberships, current)
        current.delete()
        audit.record(actor, "accounts.project.member_removed", membership.project, user=membership.user.username)


# --- SSH keys ---------------------------------------------------------------------------------------


def ssh_key_add(*, actor: User, name: str, public_key: str) -> SshKey:
    """Store an SSH public key of ``actor`` after parsing it; names and keys are unique per user."""
    name = name.strip()
    parsed = parse_public_key(public_key)
    if not name:
        name = parsed.comment[:100] or parsed.fingerprint
    if SshKey.objects.filter(user=actor, name=name).exists():
        raise Conflict(f"you already have a key named {name!r}", code="ssh-key-exists")
    if SshKey.objects.filter(user=actor, fingerprint=parsed.fingerprint).exists():
        raise Conflict(f"you already added this key ({parsed.fingerprint})", code="ssh-key-exists")
    try:
        with transaction.atomic():
            key = SshKey.objects.create(
                user=actor,
                name=name,
                public_key=parsed.line,
                key_type=parsed.key_type,
                bits=parsed.bits,
                fingerprint=parsed.fingerprint,
            )
            audit.record(actor, "accounts.ssh_key.added", key, fingerprint=parsed.fingerprint)
    except IntegrityError:
        raise Conflict("you already added this key or a key with this name", code="ssh-key-exists") from None
    return key


def ssh_key_delete(*, actor: User, key: SshKey) -> None:
    with transaction.atomic():
        audit.record(actor, "accounts.ssh_key.deleted", key, fingerprint=key.fingerprint)
        key.delete()


# --- API tokens -------------------------------------------------------------------------------------


def api_token_create(*, actor: User, name: str, expires_in_days: int | None = None) -> tuple[ApiToken, str]:
    """A new API token for ``actor``. Returns the record and the token itself, which is stored only as
    knox's hash and never shown again."""
    name = name.strip()
    if not name:
        raise ApplicationError("name: give the token a name, e.g. the machine or script using it", code="invalid")
    maximum = settings.ACCOUNTS_TOKEN_MAX_DAYS
    if expires_in_days is not None and not 1 <= expires_in_days <= maximum:
        raise ApplicationError(f"expires_in_days: must be between 1 and {maximum}", code="invalid")
    with transaction.atomic():
        token, secret = AuthToken.objects.create(
            user=actor, expiry=timedelta(days=expires_in_days) if expires_in_days else None
        )
        record = ApiToken.objects.create(token=token, user=actor, name=name[:100])
        audit.record(actor, "accounts.api_token.created", record, name=record.name, expires=token.expiry)
    return record, secret


def api_token_revoke(*, actor: User, token: ApiToken) -> None:
    """Revoke ``token`` at once (its knox record goes, and the name with it)."""
    with transaction.atomic():
        audit.record(actor, "accounts.api_token.revoked", token, name=token.name)
        AuthToken.objects.filter(pk=token.token_id).delete()
