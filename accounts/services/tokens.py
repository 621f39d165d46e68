"""API tokens (knox): made with an expiry no later than the credential that asks, revoked at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from knox.models import AuthToken

from accounts.models import ApiToken
from core import audit
from core.errors import ApplicationError


def api_token_create(
    *,
    actor: User,
    name: str,
    expires_in_days: int | None = None,
    never_expires: bool = False,
    credential_expiry: datetime | None = None,
) -> tuple[ApiToken, str]:
    """A new API token for ``actor``. Returns the record and the token itself, which is stored only as
    knox's hash and never shown again.

    ``credential_expiry`` is the expiry of the token the request was authenticated by (None: a session
    or a token that never expires): the new token may not outlive it. Without ``expires_in_days`` it gets
    that expiry; ``never_expires`` (asked explicitly) is then refused, like a later expiry."""
    name = name.strip()
    if not name:
        raise ApplicationError("name: give the token a name, e.g. the machine or script using it", code="invalid")
    maximum = settings.ACCOUNTS_TOKEN_MAX_DAYS
    if expires_in_days is not None and not 1 <= expires_in_days <= maximum:
        raise ApplicationError(f"expires_in_days: must be between 1 and {maximum}", code="invalid")
    expiry = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
    if credential_expiry is not None:
        if never_expires or (expiry is not None and expiry > credential_expiry):
            raise ApplicationError(
                f"expires_in_days: the token you are using expires at "
                f"{credential_expiry.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}; a token made with it "
                f"may not outlive it (leave expires_in_days out to get the same expiry)",
                code="token-outlives-credential",
            )
        if expiry is None:
            expiry = credential_expiry
    with transaction.atomic():
        token, secret = AuthToken.objects.create(user=actor, expiry=None)
        if expiry is not None:
            # Set exactly, not as a delay from knox's own "now", so an inherited expiry is the same instant.
            token.expiry = expiry
            token.save(update_fields=["expiry"])
        record = ApiToken.objects.create(token=token, user=actor, name=name[:100])
        audit.record(actor, "accounts.api_token.created", record, name=record.name, expires=token.expiry)
    return record, secret


def api_token_revoke(*, actor: User, token: ApiToken) -> None:
    """Revoke ``token`` at once (its knox record goes, and the name with it)."""
    with transaction.atomic():
        audit.record(actor, "accounts.api_token.revoked", token, name=token.name)
        AuthToken.objects.filter(pk=token.token_id).delete()
