"""Marketplace state changes: OpenPGP keys, signed entries, the site key and its endorsements, the site
policy, and expiry notices.

Signature work (gpg) runs before any transaction opens; each transaction then holds the rows it
needs for as short a time as it can.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from core import audit
from core.errors import ApplicationError, Conflict
from marketplace import metadata, selectors, signing
from marketplace.models import Endorser, Entry, Image, PgpKey, SiteKey, SitePolicy
from marketplace.policy import PolicyRules, active_rules, rules_from_policy_cfg
from marketplace.selectors import pgp_key_get

# An endorsement may be dated a little ahead of our clock (the signer's clock drifts), not more:
# a far-future ``created`` would block its timeline against every honest newer entry.
CLOCK_SKEW = dt.timedelta(minutes=5)


# --- OpenPGP keys ------------------------------------------------------------------------------------


def pgp_key_register(*, actor: Any, armored: str) -> PgpKey:
    """Register ``armored`` (one public key) to ``actor`` and trust it for verifying entries.

    The key's user IDs must include the account's e-mail (only that user ID may endorse); secret keys,
    several keys, expired keys, the site's keys and keys registered before (to anyone) are refused."""
    info = signing.key_inspect(armored)  # SigningError: pgp-key-invalid / pgp-key-secret / pgp-key-count
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
        image_display_refresh(image_ids=selectors.images_latest_signed_by(key=key))
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


def _refused(check: signing.SignatureCheck, name: str, message: str) -> SignatureReport:
    return SignatureReport(check.kind, False, check.fingerprint, name, message)


def _signature_report(raw: bytes, md: metadata.Metadata) -> tuple[SignatureReport, PgpKey | None]:
    """Verify the signature against the trusted keyring, then against who owns the key (DESIGN §2.2).

    The key must be the site key or registered to an account, unrevoked now; ``slreq:email`` must be the
    e-mail its owner holds (the account's, or the site's); and the endorser e-mail must not belong to
    another account (or to the site) already. Reads only: ``entry_upload`` checks the endorser again
    under its row lock."""
    check = signing.verify(raw, md)
    if not check.verified:
        return SignatureReport(check.kind, False, check.fingerprint, check.check, check.message), None
    fingerprint = (check.fingerprint or "").upper()
    email = md.endorsement.email.lower()
    # The site key first: should an account ever hold a row with its fingerprint, the entry is still the site's.
    site_key = SiteKey.objects.filter(fingerprint=fingerprint).first() if fingerprint else None
    key: PgpKey | None = None
    if site_key is not None:
        owner_email, account_id = site_key.email.strip().lower(), None
    else:
        key = PgpKey.objects.filter(fingerprint=fingerprint).select_related("owner").first()
        if key is None:
            return _refused(
                check, "unregistered-key", f"The signing key {fingerprint} is not registered with the Marketplace."
            ), None
        if key.revoked_at is not None:
            # Whatever the entry's created time says: a revoked key makes no new endorsements.
            return _refused(
                check,
                "revoked-key",
                f"The signing key {fingerprint} was revoked on {key.revoked_at:%Y-%m-%dT%H:%M:%SZ}; entries signed "
                "with it are no longer accepted, whatever their created time.",
            ), key
        owner_email, account_id = (key.owner.email or "").strip().lower(), key.owner_id
    if site_key is None and email in selectors.site_emails():
        # An account that came to hold the site e-mail (before it was reserved) still cannot speak for the site.
        return _refused(
            check,
            "email-not-owner",
            f"slreq:email {email} is the site's e-mail: only the site key endorses as it, not the key of "
            f"{owner_email or 'an account'}.",
        ), key
    if not owner_email or email != owner_email:
        return _refused(
            check,
            "email-not-owner",
            f"slreq:email {email} is not the e-mail of the key's owner ({owner_email or 'none'}): a user ID "
            "carrying someone else's e-mail gives no right to endorse as them.",
        ), key
    endorser = Endorser.objects.filter(email=email).only("account_id").first()
    if endorser is not None and endorser.account_id != account_id:
        return _refused(check, "endorser-taken", _endorser_taken(email, endorser.account_id)), key
    return SignatureReport(check.kind, True, fingerprint, None, check.message), key


def _endorser_taken(email: str, holder_id: int | None) -> str:
    """Why an entry for ``email``, whose endorser belongs to ``holder_id`` (None: the site), is refused."""
    holder = "the site" if holder_id is None else "another account"
    return (
        f"The endorser e-mail {email} already belongs to {holder}: its timelines take entries from its holder's "
        "keys only."
    )


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


def _claimed_checksums(md: metadata.Metadata) -> dict[str, str]:
    return {c.algorithm: c.value.lower() for c in md.checksums}


def _image_fix(*, md: metadata.Metadata, created: dt.datetime) -> Image:
    """The image row of ``md``'s identifier, locked: made from this entry if it is the first, else checked
    against what the first accepted entry fixed (size, checksums) and completed with checksums it lacked.

    Precondition: inside the upload's transaction (after the endorser's row lock)."""
    claimed = _claimed_checksums(md)
    image = Image.objects.select_for_update().filter(identifier=md.identifier).first()
    if image is None:
        try:
            with transaction.atomic():
                return Image.objects.create(
                    identifier=md.identifier,
                    sha1=md.sha1.lower(),
                    bytes=md.bytes,
                    checksums=claimed,
                    sha256=claimed.get("SHA-256", ""),
                    first_endorsed=created,
                    updated=created,
                )
        except IntegrityError:  # another upload made this identifier's row first (and has committed)
            image = Image.objects.select_for_update().get(identifier=md.identifier)
    if md.bytes != image.bytes:
        raise ApplicationError(
            f"The image {image.identifier} is {image.bytes} bytes, as its first entry fixed; "
            f"this entry claims {md.bytes}.",
            code="bytes-conflict",
        )
    for algorithm, value in claimed.items():
        fixed = image.checksums.get(algorithm)
        if fixed is not None and fixed != value:
            raise ApplicationError(
                f"The image {image.identifier}'s {algorithm} checksum is {fixed}, as its first entry that gave one "
                f"fixed; this entry claims {value}.",
                code="checksum-conflict",
            )
    added = {a: v for a, v in claimed.items() if a not in image.checksums}
    if added:
        checksums = {**image.checksums, **added}
        Image.objects.filter(pk=image.pk).update(checksums=checksums, sha256=checksums.get("SHA-256", ""))
        image.refresh_from_db()
    return image


def image_display_refresh(*, image_ids: Iterable[int]) -> None:
    """Recompute the display columns of these images: a cache of the claims of the entry that
    ``selectors.image_display_entry`` picks (the site's current endorsement, else the one whose timeline
    started first). Takes the images' row locks in primary-key order (``entry_upload`` already holds its one)."""
    now = timezone.now()
    with transaction.atomic():
        for image in Image.objects.select_for_update().filter(pk__in=list(image_ids)).order_by("pk"):
            entry = selectors.image_display_entry(image=image, now=now)
            if entry is None:
                continue
            values = {name: getattr(entry, name) for name in selectors.DISPLAY_FIELDS}
            if any(getattr(image, name) != value for name, value in values.items()):
                Image.objects.filter(pk=image.pk).update(**values)


def entry_upload(
    *,
    raw: bytes,
    uploader: Any,
    audit_action: str = "marketplace.entry.uploaded",
    audit_details: Mapping[str, Any] | None = None,
) -> Entry:
    """Verify and store one signed entry as its endorser's latest for the image.

    Refused with 400 naming the rule (format, signature, key) or 409 when the endorser's timeline
    already holds an entry as new or newer. Parsing and gpg run first, outside any transaction; the
    store runs under the endorser's row lock, which serialises that endorser's timelines, and the image's
    row lock, which serialises what is fixed about the image (``bytes-conflict``, ``checksum-conflict``: 400)
    and its display columns. Callers that upload for a reason of their own (the site's endorsements) name
    their audit action and add details."""
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
        # The first entry fixes whose the endorser e-mail is: the key's account, or the site (no account).
        account_id = key.owner_id if key is not None else None
        endorser, _ = Endorser.objects.get_or_create(
            email=email,
            defaults={
                "subject": md.endorsement.subject,
                "first_endorsed": created,
                "last_endorsed": created,
                "account_id": account_id,
            },
        )
        endorser = Endorser.objects.select_for_update().get(pk=endorser.pk)
        if endorser.account_id != account_id:
            raise ApplicationError(_endorser_taken(email, endorser.account_id), code="endorser-taken")
        image = _image_fix(md=md, created=created)
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
        Image.objects.filter(pk=image.pk, updated__lt=created).update(updated=created)
        image_display_refresh(image_ids=[image.pk])
        image.refresh_from_db()
        if latest is None:
            change = "new"
        elif entry.deprecated and not latest.deprecated:
            change = "deprecated"
        elif latest.deprecated and not entry.deprecated:
            change = "undeprecated"
        else:
            change = "updated"
        details: dict[str, Any] = {
            "identifier": md.identifier,
            "endorser": email,
            "created": created.isoformat(),
            "fingerprint": entry.fingerprint,
            "change": change,
            "deprecated": entry.deprecated_reason if entry.deprecated else None,
            **(audit_details or {}),
        }
        audit.record(uploader, audit_action, entry, **details)
    entry.image = image
    entry.endorser = endorser
    return entry


# --- The site key --------------------------------------------------------------------------------------------


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


# --- The site's endorsements --------------------------------------------------------------------------------


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


# --- The site policy ----------------------------------------------------------------------------------------


def policy_change(
    *, actor: Any, rules: PolicyRules, note: str = "", based_on: int | None = None, source: str = "api"
) -> tuple[SitePolicy, bool]:
    """Make ``rules`` the active policy: a new version, the old one kept in the history.

    ``based_on``: the active policy's id the caller's dry run was made against (0: there was none); when the
    active policy has changed since, the change is refused (409) so that no one confirms a stale dry run.
    Rules equal to the active ones change nothing. Returns the active policy and whether it changed.
    Audit: ``marketplace.policy.changed`` with the old and new rules."""
    try:
        with transaction.atomic():
            current = SitePolicy.objects.select_for_update().filter(is_active=True).first()
            if based_on is not None and (current.pk if current else 0) != based_on:
                raise Conflict(
                    "The policy was changed by someone else since this dry run; look at the dry run again.",
                    code="policy-changed",
                )
            old = PolicyRules.from_json(current.rules) if current else PolicyRules()
            if current is not None and old == rules:
                return current, False
            if current is not None:
                SitePolicy.objects.filter(pk=current.pk).update(is_active=False)
            policy = SitePolicy.objects.create(
                rules=rules.to_json(),
                created_by=actor if getattr(actor, "is_authenticated", False) else None,
                note=note.strip(),
                is_active=True,
            )
            audit.record(
                actor,
                "marketplace.policy.changed",
                policy,
                old=old.to_json(),
                new=rules.to_json(),
                previous=current.pk if current else None,
                note=policy.note,
                source=source,
            )
    except IntegrityError:  # two first policies at once: the other one won
        raise Conflict("The policy was changed at the same moment; try again.", code="policy-changed") from None
    return policy, True


def policy_rules_from_cfg(*, text: str) -> PolicyRules:
    """The active rules with the endorser, image and checksum lists of a StratusLab ``policy.cfg``."""
    return rules_from_policy_cfg(text, base=active_rules())


# --- Expiry notices ----------------------------------------------------------------------------------------


def endorsement_expiry_notify(*, now: dt.datetime | None = None, within: dt.timedelta | None = None) -> int:
    """Mail each endorser whose current endorsements expire within ``within`` (default
    ``MARKETPLACE_EXPIRY_NOTICE_DAYS``) one message listing the images; returns how many mails were sent.

    Each entry is announced once (``notified_expiry``): running again sends nothing new. Per endorser, the
    entries are claimed under row locks (skipping rows another run holds), mailed, and marked in one
    transaction, so a failed mail leaves them to the next run."""
    now = now or timezone.now()
    within = within or dt.timedelta(days=settings.MARKETPLACE_EXPIRY_NOTICE_DAYS)
    pending: dict[int, list[int]] = {}
    for entry_id, endorser_id in selectors.entries_expiring(now=now, within=within).values_list("id", "endorser_id"):
        pending.setdefault(endorser_id, []).append(entry_id)
    sent = 0
    for ids in pending.values():
        with transaction.atomic():
            claimed = list(
                Entry.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(pk__in=ids, notified_expiry__isnull=True)
                .select_related("image", "endorser")
                .defer("raw", "details", "search_text", "description")
                .order_by("valid_until", "pk")
            )
            if not claimed:
                continue
            endorser = claimed[0].endorser
            images = [
                {
                    "identifier": e.image.identifier,
                    "title": e.title or e.image.title,
                    "valid_until": e.valid_until,
                    "url": settings.SITE_URL + reverse("marketplace-image", args=[e.image.identifier]),
                }
                for e in claimed
            ]
            context = {"endorser": endorser, "images": images, "site_name": settings.SITE_NAME}
            count = len(images)
            send_mail(
                subject=f"[{settings.SITE_NAME}] {count} Marketplace endorsement{'s' if count != 1 else ''} "
                "expire soon",
                message=render_to_string("marketplace/email/expiring.txt", context),
                from_email=None,
                recipient_list=[endorser.email],
            )
            Entry.objects.filter(pk__in=[e.pk for e in claimed]).update(notified_expiry=now)
            audit.record(
                None,
                "marketplace.expiry.notified",
                endorser,
                email=endorser.email,
                identifiers=[i["identifier"] for i in images],
            )
        sent += 1
    return sent
