"""The site's own key and its endorsements: the passphrase file, making and recording the key, and the site
entries that endorse or deprecate an image (signed here, then uploaded like any other entry).

gpg runs before any transaction opens."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core import audit
from core.errors import ApplicationError, Conflict
from marketplace import metadata, selectors, signing
from marketplace.models import Entry, Image, SiteKey
from marketplace.services.entries import entry_upload
from marketplace.services.gpg_errors import gpg_errors


def _passphrase_path() -> Path:
    return Path(settings.MARKETPLACE_SITE_KEY_PASSPHRASE_FILE)


def site_key_passphrase(*, create: bool = False) -> str:
    """The site key's passphrase, read from ``MARKETPLACE_SITE_KEY_PASSPHRASE_FILE`` (its first line).

    ``create``: make the file (mode 600, a random passphrase) when it is missing."""
    path = _passphrase_path()
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made by a concurrent run: use theirs
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise Conflict(
            f"The site key's passphrase file {path} is missing; run `manage.py create_site_key`.",
            code="site-key-passphrase-missing",
        ) from None
    passphrase = lines[0].strip() if lines else ""
    if not passphrase:
        raise Conflict(f"The site key's passphrase file {path} is empty.", code="site-key-passphrase-missing")
    return passphrase


def site_key_ensure(*, actor: Any) -> tuple[SiteKey, bool]:
    """The site key, made first if the site keyring holds none for ``MARKETPLACE_SITE_KEY_EMAIL``; idempotent.

    Generates an ed25519 key ``SITE_NAME <MARKETPLACE_SITE_KEY_EMAIL>`` protected by the passphrase file (made
    if missing), checks that the passphrase unlocks it, trusts its public half in the Marketplace's keyring and
    records it, so that its entries count as the site's. Returns the key and whether it was recorded now.
    gpg runs before the transaction."""
    with gpg_errors():
        home = signing.site_keyring(Path(settings.MARKETPLACE_SITE_GNUPG_HOME))
        email = settings.MARKETPLACE_SITE_KEY_EMAIL.strip().lower()
        passphrase = site_key_passphrase(create=True)
        info = signing.secret_key_find(gnupghome=home, email=email)
        generated = info is None
        if info is None:
            info = signing.key_generate(gnupghome=home, name=settings.SITE_NAME, email=email, passphrase=passphrase)
        if not signing.key_unlocks(gnupghome=home, fingerprint=info.fingerprint, passphrase=passphrase):
            raise ApplicationError(
                f"The passphrase in {_passphrase_path()} does not unlock the site key {info.fingerprint}.",
                code="site-key-passphrase",
            )
        signing.key_trust(info.armored)
    uid = info.uid_for(email) or info.uids[0]
    try:
        with transaction.atomic():
            key, created = SiteKey.objects.get_or_create(
                fingerprint=info.fingerprint,
                defaults={"uid": uid, "email": email, "armored": info.armored, "created": info.created},
            )
            if created:
                audit.record(
                    actor,
                    "marketplace.site_key.created",
                    key,
                    fingerprint=key.fingerprint,
                    uid=uid,
                    generated=generated,
                )
    except IntegrityError:  # recorded by a concurrent run
        return SiteKey.objects.get(fingerprint=info.fingerprint), False
    return key, created


def _site_entry(
    *, actor: Any, image: Image, deprecated: str | None, valid_until: dt.datetime | None, action: str, reason: str
) -> Entry:
    """Sign a new site entry for ``image``, built from the entry it is shown with, and upload it like any other."""
    key = selectors.site_key_get()
    if key is None:
        raise Conflict("The site has no key yet: run `manage.py create_site_key`.", code="site-key-missing")
    passphrase = site_key_passphrase()
    now = timezone.now().replace(microsecond=0)
    if valid_until is not None and valid_until <= now:
        raise ApplicationError(
            f"valid_until {metadata.format_date(valid_until)} is not in the future.", code="valid-until-past"
        )
    site_latest = Entry.objects.filter(image=image, endorser__email=key.email, is_latest=True).only("created").first()
    if site_latest is not None and now <= site_latest.created:
        now = site_latest.created + dt.timedelta(seconds=1)  # two clicks within a second: keep the timeline moving
    # Built from the entry the image is shown with (the site's own, else the oldest current endorsement's),
    # never simply the newest: that could be anyone's claims.
    source = metadata.parse(bytes(selectors.image_display_source(image=image).raw))
    document = metadata.rebuild(
        source, endorser_email=key.email, endorsement_created=now, deprecated=deprecated, valid=valid_until
    )
    with gpg_errors():  # a wrong passphrase in the file: pgp-passphrase
        signed = signing.sign(
            document,
            gnupghome=Path(settings.MARKETPLACE_SITE_GNUPG_HOME),
            fingerprint=key.fingerprint,
            passphrase=passphrase,
            email=key.email,
            now=now,
        )
    return entry_upload(raw=signed, uploader=actor, audit_action=action, audit_details={"reason": reason})


def image_site_endorse(*, actor: Any, image: Image, valid_until: dt.datetime | None = None, reason: str = "") -> Entry:
    """Endorse ``image`` with the site key (also un-deprecates the site's earlier word): a new signed entry
    built from the entry the image is shown with, uploaded through :func:`entry_upload`. Audit:
    ``marketplace.site.endorsed``."""
    return _site_entry(
        actor=actor,
        image=image,
        deprecated=None,
        valid_until=valid_until,
        action="marketplace.site.endorsed",
        reason=reason.strip(),
    )


def image_site_deprecate(*, actor: Any, image: Image, reason: str) -> Entry:
    """Deprecate the site's endorsement of ``image`` with ``reason`` (required): a newer site entry carrying
    ``slterms:deprecated``. Refused when the site does not currently endorse it. Audit:
    ``marketplace.site.deprecated``."""
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError("A reason is required to deprecate the site's endorsement.", code="reason-required")
    key = selectors.site_key_get()
    site_latest = Entry.objects.filter(image=image, endorser__email=key.email, is_latest=True).first() if key else None
    if site_latest is None or site_latest.deprecated:
        raise Conflict(
            f"The site does not endorse {image.identifier}: there is no site endorsement to deprecate.",
            code="site-not-endorsing",
        )
    return _site_entry(
        actor=actor,
        image=image,
        deprecated=reason,
        valid_until=None,
        action="marketplace.site.deprecated",
        reason=reason,
    )
