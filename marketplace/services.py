"""Marketplace state changes: registering and revoking OpenPGP keys, uploading signed entries.

Signature work (gpg) runs before any transaction opens; each transaction then holds the rows it
needs for as short a time as it can.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core import audit
from core.errors import ApplicationError, Conflict
from marketplace import metadata, signing
from marketplace.models import Endorser, Entry, Image, PgpKey
from marketplace.selectors import pgp_key_get

# An endorsement may be dated a little ahead of our clock (the signer's clock drifts), not more:
# a far-future ``created`` would block its timeline against every honest newer entry.
CLOCK_SKEW = dt.timedelta(minutes=5)


def _site_key_fingerprint() -> str:
    return str(getattr(settings, "MARKETPLACE_SITE_KEY_FINGERPRINT", "") or "").upper()


# --- OpenPGP keys ------------------------------------------------------------------------------------


def pgp_key_register(*, actor: Any, armored: str) -> PgpKey:
    """Register ``armored`` (one public key) to ``actor`` and trust it for verifying entries.

    The key's user IDs must include the account's e-mail; secret keys, several keys, expired keys and
    keys registered before (to anyone) are refused."""
    info = signing.key_inspect(armored)  # SigningError: pgp-key-invalid / pgp-key-secret / pgp-key-count
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
        changed = PgpKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now, revoked_by=actor)
        if changed != 1:
            raise Conflict(f"The key {key.fingerprint} is already revoked.", code="pgp-key-already-revoked")
        key.refresh_from_db()
        audit.record(actor, "marketplace.pgp_key.revoked", key, fingerprint=key.fingerprint, owner=key.owner_id)
    return key


# --- Entries -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureReport:
    kind: str
    verified: bool
    fingerprint: str | None
    check: str | None
    message: str


@dataclass(frozen=True)
class Validation:
    """What ``entry_validate`` found: format problems apart from the signature's verdict."""

    identifier: str | None
    problems: list[metadata.Problem]
    signature: SignatureReport
    warnings: list[metadata.Problem] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems


def _signature_report(raw: bytes, md: metadata.Metadata) -> tuple[SignatureReport, PgpKey | None]:
    """Verify the signature against the trusted keyring, then against registration and revocation."""
    check = signing.verify(raw, md)
    if not check.verified:
        return SignatureReport(check.kind, False, check.fingerprint, check.check, check.message), None
    fingerprint = (check.fingerprint or "").upper()
    key = PgpKey.objects.filter(fingerprint=fingerprint).first()
    created = md.endorsement.created
    if key is None:
        if fingerprint and fingerprint == _site_key_fingerprint():
            return SignatureReport(check.kind, True, fingerprint, None, check.message), None
        return (
            SignatureReport(
                check.kind,
                False,
                fingerprint,
                "unregistered-key",
                f"The signing key {fingerprint} is not registered with the Marketplace.",
            ),
            None,
        )
    if key.revoked_at is not None and key.revoked_at <= created:
        return (
            SignatureReport(
                check.kind,
                False,
                fingerprint,
                "revoked-key",
                f"The signing key {fingerprint} was revoked on {key.revoked_at:%Y-%m-%dT%H:%M:%SZ}, "
                f"before the endorsement's created time {created:%Y-%m-%dT%H:%M:%SZ}.",
            ),
            key,
        )
    return SignatureReport(check.kind, True, fingerprint, None, check.message), key


def entry_validate(*, raw: bytes) -> Validation:
    """Check a document as an upload would, without storing anything."""
    md, problems = metadata.check(raw)
    if md is None or problems:
        return Validation(None, problems, _not_checked())
    report, _key = _signature_report(raw, md)
    return Validation(md.identifier, [], report, warnings=list(md.warnings))


def _not_checked() -> SignatureReport:
    return SignatureReport(
        "none", False, None, "not-checked", "The signature was not checked because the document is not valid."
    )


def _entry_columns(md: metadata.Metadata) -> dict[str, Any]:
    """The columns listings filter on, and the rest of what the document says, for ``Entry``."""
    details = {
        "checksums": {c.algorithm: c.value for c in md.checksums},
        "creator": md.creator,
        "created": md.created.isoformat() if md.created else None,
        "publisher": md.publisher,
        "alternative": md.alternative,
        "replaces": md.replaces,
        "is_replaced_by": md.is_replaced_by,
        "is_version_of": md.is_version_of,
        "serial_number": md.serial_number,
        "version": md.version,
        "hypervisor": md.hypervisor,
        "inbound_ports": list(md.inbound_ports),
        "outbound_ports": list(md.outbound_ports),
        "icmp": list(md.icmp),
        "disks_bus": md.disks_bus,
    }
    deprecated = md.deprecated is not None
    return {
        "valid_until": md.valid,
        "deprecated": deprecated,
        "deprecated_reason": (md.deprecated or "") if deprecated else "",
        "title": md.title[:500],
        "description": md.description,
        "search_text": f"{md.title}\n{md.description}".lower(),
        "type": md.type[:100],
        "os": md.os[:200],
        "os_version": md.os_version[:200],
        "arch": md.os_arch[:50],
        "kind": md.kind[:20],
        "format": md.format[:50],
        "compression": md.compression[:10],
        "has_location": bool(md.locations),
        "locations": list(md.locations),
        "bytes": md.bytes,
        "sha1": md.sha1.lower(),
        "sha256": (md.sha256 or "").lower(),
        "details": details,
    }


def entry_upload(*, raw: bytes, uploader: Any) -> Entry:
    """Verify and store one signed entry as its endorser's latest for the image.

    Refused with 400 naming the rule (format, signature, key) or 409 when the endorser's timeline
    already holds an entry as new or newer. Parsing and gpg run first, outside any transaction; the
    store runs under the endorser's row lock, which serialises that endorser's timelines."""
    md = metadata.parse(raw)
    report, key = _signature_report(raw, md)
    if not report.verified:
        raise ApplicationError(report.message, code=report.check or "bad-signature")
    created = md.endorsement.created
    if created > timezone.now() + CLOCK_SKEW:
        raise ApplicationError(
            f"The endorsement's created time {created:%Y-%m-%dT%H:%M:%SZ} is in the future.",
            code="created-in-future",
        )
    email = md.endorsement.email.lower()
    columns = _entry_columns(md)

    with transaction.atomic():
        endorser, _ = Endorser.objects.get_or_create(
            email=email,
            defaults={"subject": md.endorsement.subject, "first_endorsed": created, "last_endorsed": created},
        )
        endorser = Endorser.objects.select_for_update().get(pk=endorser.pk)
        image, image_created = Image.objects.get_or_create(
            identifier=md.identifier,
            defaults={
                "sha1": columns["sha1"],
                "bytes": md.bytes,
                "title": columns["title"],
                "description": md.description,
                "os": columns["os"],
                "os_version": columns["os_version"],
                "arch": columns["arch"],
                "kind": columns["kind"],
                "format": columns["format"],
                "first_endorsed": created,
                "updated": created,
            },
        )
        latest = (
            Entry.objects.filter(image=image, endorser=endorser, is_latest=True)
            .only("id", "created", "deprecated")
            .first()
        )
        if latest is not None and created <= latest.created:
            raise Conflict(
                f"{email} already has an entry for {md.identifier} created {latest.created:%Y-%m-%dT%H:%M:%SZ}; "
                f"an upload must be newer than that (this one was created {created:%Y-%m-%dT%H:%M:%SZ}).",
                code="not-newer",
            )
        if latest is not None:
            Entry.objects.filter(pk=latest.pk).update(is_latest=False)
        entry = Entry.objects.create(
            image=image,
            endorser=endorser,
            created=created,
            subject=md.endorsement.subject[:500],
            issuer=md.endorsement.issuer[:100],
            fingerprint=report.fingerprint or "",
            key=key,
            raw=raw,
            uploader=uploader if getattr(uploader, "is_authenticated", False) else None,
            is_latest=True,
            **columns,
        )
        Endorser.objects.filter(pk=endorser.pk).update(
            entry_count=F("entry_count") + 1,
            **(
                {"subject": md.endorsement.subject[:500], "last_endorsed": created}
                if created >= endorser.last_endorsed
                else {}
            ),
        )
        if not image_created:
            # Display columns follow the newest entry of any endorser; a conditional update needs no lock.
            Image.objects.filter(pk=image.pk, updated__lt=created).update(
                title=columns["title"],
                description=md.description,
                os=columns["os"],
                os_version=columns["os_version"],
                arch=columns["arch"],
                kind=columns["kind"],
                format=columns["format"],
                bytes=md.bytes,
                updated=created,
            )
        if latest is None:
            change = "new"
        elif entry.deprecated and not latest.deprecated:
            change = "deprecated"
        elif latest.deprecated and not entry.deprecated:
            change = "undeprecated"
        else:
            change = "updated"
        audit.record(
            uploader,
            "marketplace.entry.uploaded",
            entry,
            identifier=md.identifier,
            endorser=email,
            created=created.isoformat(),
            fingerprint=entry.fingerprint,
            change=change,
            deprecated=entry.deprecated_reason if entry.deprecated else None,
        )
    entry.image = image
    entry.endorser = endorser
    return entry
