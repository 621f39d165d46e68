"""Signed entries: validating a document, uploading it as its endorser's latest for the image, the facts an
image's first entry fixes, and the display columns of images.

gpg (the signature check) runs before any transaction opens; the upload's transaction then holds the
endorser's and the image's row locks for as short a time as it can.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core import audit
from core.errors import ApplicationError, Conflict
from marketplace import metadata, selectors, signing
from marketplace.models import Endorser, Entry, Image, PgpKey, SiteKey, TrustChange
from marketplace.policy import verdicts
from marketplace.services.gpg_errors import gpg_errors
from marketplace.signing.x509 import dn_parse, dn_text

# An endorsement may be dated a little ahead of our clock (the signer's clock drifts), not more:
# a far-future ``created`` would block its timeline against every honest newer entry.
CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class SignatureReport:
    kind: str
    verified: bool
    fingerprint: str | None
    check: str | None
    message: str
    # A legacy X.509 signature's certificate subject (RFC 4514): the holder of the endorser e-mail it may use.
    certificate_subject: str = ""


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


def _issuer_fingerprint(md: metadata.Metadata) -> str:
    """The fingerprint ``slreq:issuer`` names (``OpenPGP:<40 hex>``), upper case, or "" (the verifier refuses
    an entry whose signer is not its issuer)."""
    issuer = md.endorsement.issuer.strip()
    value = issuer.split(":", 1)[1].strip() if issuer.lower().startswith("openpgp:") else ""
    return value.upper() if len(value) == 40 else ""


def _signature_report(
    raw: bytes, md: metadata.Metadata, *, check_endorser: bool = True
) -> tuple[SignatureReport, PgpKey | None]:
    """Verify the signature against the trusted keyring, then against who owns the key (DESIGN §2.2).

    The key must be the site key or registered to an account, unrevoked now; ``slreq:email`` must be the
    e-mail its owner holds (the account's, or the site's); and (``check_endorser``) the endorser e-mail must not
    belong to another account (or to the site) already. A legacy XML-DSig signature's certificate, vouched for by
    a trusted CA, holds the e-mails it carries (``_certificate_report``). Reads only, two queries and one gpg
    process: the key that the entry's issuer names is read first, and the verification takes its facts from that
    row. ``entry_upload`` checks the endorser again under its row lock."""
    site_keys = {fp.upper(): mail.strip().lower() for fp, mail in SiteKey.objects.values_list("fingerprint", "email")}
    claimed = _issuer_fingerprint(md)
    issuer_key = (
        PgpKey.objects.select_related("owner").filter(fingerprint=claimed).first()
        if claimed and claimed not in site_keys
        else None
    )
    known = {claimed: _key_facts(issuer_key)} if issuer_key is not None else {}
    with gpg_errors():
        check = signing.verify(raw, md, known_keys=known)
    if not check.verified:
        return SignatureReport(check.kind, False, check.fingerprint, check.check, check.message), None
    if check.kind == "xmldsig":
        return _certificate_report(check, md, check_endorser=check_endorser), None
    fingerprint = (check.fingerprint or "").upper()
    email = md.endorsement.email.lower()
    key: PgpKey | None = None
    # The site key first: should an account ever hold a row with its fingerprint, the entry is still the site's.
    if fingerprint in site_keys:
        owner_email, account_id = site_keys[fingerprint], None
    else:
        key = (
            issuer_key
            if issuer_key is not None and issuer_key.fingerprint == fingerprint
            else PgpKey.objects.filter(fingerprint=fingerprint).select_related("owner").first()
        )
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
    configured = (getattr(settings, "MARKETPLACE_SITE_KEY_EMAIL", "") or "").strip().lower()
    if fingerprint not in site_keys and email in {configured, *site_keys.values()} - {""}:
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
    if check_endorser:
        endorser = Endorser.objects.filter(email=email).only("account_id", "certificate_subject").first()
        if endorser is not None and (endorser.account_id, endorser.certificate_subject) != (account_id, ""):
            return _refused(check, "endorser-taken", _endorser_taken(email, endorser)), key
    return SignatureReport(check.kind, True, fingerprint, None, check.message), key


def _certificate_report(
    check: signing.SignatureCheck, md: metadata.Metadata, *, check_endorser: bool = True
) -> SignatureReport:
    """A verified legacy signature: the certificate (its subject DN, as the CA vouched for it) holds the
    endorser e-mail — unless the e-mail is the site's, or its timelines already belong to another holder."""
    email = md.endorsement.email.lower()
    parsed = dn_parse(md.endorsement.subject)  # verified equal to the certificate's subject
    subject = dn_text(parsed) if parsed is not None else md.endorsement.subject
    if email in selectors.site_emails():
        return _refused(
            check, "email-not-owner", f"slreq:email {email} is the site's e-mail: only the site key endorses as it."
        )
    if check_endorser:
        endorser = Endorser.objects.filter(email=email).only("account_id", "certificate_subject").first()
        if endorser is not None and (endorser.account_id, endorser.certificate_subject) != (None, subject):
            return _refused(check, "endorser-taken", _endorser_taken(email, endorser))
    return SignatureReport(check.kind, True, check.fingerprint, None, check.message, certificate_subject=subject)


def _key_facts(key: PgpKey) -> signing.KeyInfo:
    return signing.KeyInfo(
        fingerprint=key.fingerprint.upper(),
        uids=tuple(key.uids),
        emails=tuple(key.emails),
        created=key.created,
        expires=key.expires,
        armored="",
    )


def _endorser_taken(email: str, holder: Endorser) -> str:
    """Why an entry for ``email``, whose timelines belong to ``holder``'s account, certificate or the site, is
    refused."""
    if holder.account_id is not None:
        who = "another account"
    elif holder.certificate_subject:
        who = f"the certificate {holder.certificate_subject}"
    else:
        who = "the site"
    return (
        f"The endorser e-mail {email} already belongs to {who}: its timelines take entries from its holder's keys only."
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


def _image_fix(*, md: metadata.Metadata, created: dt.datetime, display: Mapping[str, Any]) -> tuple[Image, bool]:
    """The image row of ``md``'s identifier, locked, and whether this entry made it: made from this entry if it
    is the first (shown with its claims ``display``: the only entry is the most trusted one), else checked against
    what the first accepted entry fixed (size, checksums) and completed with checksums it lacked.

    Precondition: inside the upload's transaction (after the endorser's row lock)."""
    claimed = _claimed_checksums(md)
    image = Image.objects.select_for_update().filter(identifier=md.identifier).first()
    if image is None:
        try:
            with transaction.atomic():
                made = Image.objects.create(
                    identifier=md.identifier,
                    sha1=md.sha1.lower(),
                    bytes=md.bytes,
                    checksums=claimed,
                    sha256=claimed.get("SHA-256", ""),
                    first_endorsed=created,
                    updated=created,
                    **display,
                )
                return made, True
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
        image.checksums, image.sha256 = checksums, checksums.get("SHA-256", "")
    return image, False


def image_display_refresh(*, image_ids: Iterable[int]) -> None:
    """Recompute the display columns of these images: a cache of the claims of the entry that
    ``selectors.image_display_entry`` picks (the site's current endorsement, else the one whose timeline
    started first). Takes the images' row locks in primary-key order (``entry_upload`` already holds its one)."""
    now = timezone.now()
    with transaction.atomic():
        for image in Image.objects.select_for_update().filter(pk__in=list(image_ids)).order_by("pk"):
            _image_display_update(image, now=now)


def _image_display_update(image: Image, *, now: dt.datetime) -> None:
    """Write ``image``'s display columns (and set them on the instance) when the choice now differs from them.

    Precondition: the image's row lock is held."""
    entry = selectors.image_display_entry(image=image, now=now)
    if entry is None:
        return
    values = {name: getattr(entry, name) for name in selectors.DISPLAY_FIELDS}
    if any(getattr(image, name) != value for name, value in values.items()):
        Image.objects.filter(pk=image.pk).update(**values)
        for name, value in values.items():
            setattr(image, name, value)


def _endorser_locked(*, email: str, subject: str, created: dt.datetime, holder: tuple[int | None, str]) -> Endorser:
    """The endorser row of ``email``, locked; made (held by ``holder``: an account id and a certificate subject,
    neither for the site) if this is its first entry. Precondition: inside the upload's transaction."""
    endorser = Endorser.objects.select_for_update().filter(email=email).first()
    if endorser is not None:
        return endorser
    try:
        with transaction.atomic():
            return Endorser.objects.create(
                email=email,
                subject=subject,
                first_endorsed=created,
                last_endorsed=created,
                account_id=holder[0],
                certificate_subject=holder[1],
            )
    except IntegrityError:  # another upload made it first (and has committed)
        return Endorser.objects.select_for_update().get(email=email)


@dataclass(frozen=True)
class VerifiedEntry:
    """A document whose format and signature passed (``entry_verify``), ready to be stored (``entry_store``)."""

    raw: bytes
    md: metadata.Metadata
    report: SignatureReport
    key: PgpKey | None


def entry_verify(*, raw: bytes) -> VerifiedEntry:
    """Parse and verify one signed entry, with no transaction open (gpg is slow): refused with 400 naming the
    rule (format, signature, key). Safe to run in several threads at once (bulk import)."""
    md = metadata.parse(raw)
    report, key = _signature_report(raw, md, check_endorser=False)
    if not report.verified:
        raise ApplicationError(report.message, code=report.check or "bad-signature")
    created = md.endorsement.created
    if created > timezone.now() + CLOCK_SKEW:
        raise ApplicationError(
            f"The endorsement's created time {created:%Y-%m-%dT%H:%M:%SZ} is in the future.",
            code="created-in-future",
        )
    return VerifiedEntry(raw, md, report, key)


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
    return entry_store(entry_verify(raw=raw), uploader=uploader, audit_action=audit_action, audit_details=audit_details)


def entry_store(
    verified: VerifiedEntry,
    *,
    uploader: Any,
    audit_action: str = "marketplace.entry.uploaded",
    audit_details: Mapping[str, Any] | None = None,
) -> Entry:
    """Store a verified entry as its endorser's latest for the image (the second half of ``entry_upload``),
    in one short transaction under the endorser's and the image's row locks; 409 when not newer."""
    raw, md, report, key = verified.raw, verified.md, verified.report, verified.key
    created = md.endorsement.created
    email = md.endorsement.email.lower()
    columns = _entry_columns(md)

    with transaction.atomic():
        # The first entry fixes whose the endorser e-mail is: the key's account, a legacy certificate's
        # subject, or the site (neither).
        holder = (key.owner_id if key is not None else None, report.certificate_subject)
        endorser = _endorser_locked(email=email, subject=md.endorsement.subject[:500], created=created, holder=holder)
        if (endorser.account_id, endorser.certificate_subject) != holder:
            raise ApplicationError(_endorser_taken(email, endorser), code="endorser-taken")
        display = {name: columns[name] for name in selectors.DISPLAY_FIELDS}
        image, image_is_new = _image_fix(md=md, created=created, display=display)
        latest = (  # a new image has no timelines yet
            None
            if image_is_new
            else Entry.objects.filter(image=image, endorser=endorser, is_latest=True)
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
            issuer=md.endorsement.issuer[:500],
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
        if created > image.updated:
            Image.objects.filter(pk=image.pk).update(updated=created)
            image.updated = created
        now = timezone.now()
        if not image_is_new:  # a new image is shown with its only entry's claims already
            _image_display_update(image, now=now)
        entry.endorser, entry.key = endorser, key
        # A new image's only latest entry is this one: the verdict needs no query for it.
        verdicts.image_verdict_write_locked(
            image,
            now=now,
            latest_entries=[entry] if image_is_new else None,
            cause=TrustChange.Cause.DEPRECATED
            if entry.deprecated and (latest is None or not latest.deprecated)
            else TrustChange.Cause.ENDORSEMENT,
        )
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
