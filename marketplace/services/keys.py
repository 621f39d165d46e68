"""OpenPGP keys of accounts: registering one (trusted for verifying entries) and revoking it."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from core import audit
from core.errors import ApplicationError, Conflict
from core.workflow import transition
from marketplace import selectors, signing
from marketplace.models import PgpKey, TrustChange
from marketplace.policy import verdicts
from marketplace.selectors import pgp_key_get
from marketplace.services.entries import image_display_refresh
from marketplace.services.gpg_errors import gpg_errors


def pgp_key_register(*, actor: Any, armored: str) -> PgpKey:
    """Register ``armored`` (one public key) to ``actor`` and trust it for verifying entries.

    The key's user IDs must include the account's e-mail (only that user ID may endorse); secret keys,
    several keys, expired keys, the site's keys and keys registered before (to anyone) are refused."""
    with gpg_errors():  # pgp-key-invalid / pgp-key-secret / pgp-key-count …
        info = signing.key_inspect(armored)
    if info.fingerprint in selectors.site_key_fingerprints():
        raise Conflict(
            f"The key {info.fingerprint} is the site's own key: it cannot be registered to an account.",
            code="pgp-key-reserved",
        )
    email = (actor.email or "").strip().lower()
    if not email or email not in info.emails:
        shown = ", ".join(info.emails) or "none"
        raise ApplicationError(
            f"The key's user IDs do not include your account's e-mail {actor.email or '(none)'} "
            f"(the key has: {shown}).",
            code="pgp-key-email",
        )
    if info.expires is not None and info.expires <= timezone.now():
        raise ApplicationError(
            f"The key {info.fingerprint} expired on {info.expires:%Y-%m-%d %H:%M:%SZ}.", code="pgp-key-expired"
        )
    if PgpKey.objects.filter(fingerprint=info.fingerprint).exists():
        raise Conflict(f"The key {info.fingerprint} is already registered.", code="pgp-key-registered")
    # Into the trusted keyring before the row exists: a key in the keyring without a row is refused
    # at upload as unregistered, whereas a row without the key could never verify anything.
    with gpg_errors():
        signing.key_trust(info.armored)
    try:
        with transaction.atomic():
            key = PgpKey.objects.create(
                owner=actor,
                fingerprint=info.fingerprint,
                uids=list(info.uids),
                emails=list(info.emails),
                armored=info.armored,
                created=info.created,
                expires=info.expires,
            )
            audit.record(actor, "marketplace.pgp_key.registered", key, fingerprint=key.fingerprint, uids=key.uids)
    except IntegrityError:
        raise Conflict(f"The key {info.fingerprint} is already registered.", code="pgp-key-registered") from None
    return key


def pgp_key_revoke(*, actor: Any, fingerprint: str) -> PgpKey:
    """Revoke a key from now on. Only its owner or staff may; anyone else gets the not-found of a missing key.

    Entries signed with it stay, marked, and stop counting as endorsements; uploads dated from now are refused."""
    key = pgp_key_get(actor=actor, fingerprint=fingerprint)
    now = timezone.now()
    with transaction.atomic():
        key = transition(
            PgpKey,
            pk=key.pk,
            allowed={"revoked_at": [None]},
            changes={"revoked_at": now, "revoked_by": actor},
            actor=actor,
            action="marketplace.pgp_key.revoked",
            code="pgp-key-already-revoked",
            refusal=lambda current: f"The key {current.fingerprint} is already revoked.",
            details={"fingerprint": key.fingerprint, "owner": key.owner_id},
        )
        signed_for = selectors.images_latest_signed_by(key=key)
        image_display_refresh(image_ids=signed_for)
        verdicts.image_verdicts_write(image_ids=signed_for, cause=TrustChange.Cause.KEY_REVOKED)
    return key
