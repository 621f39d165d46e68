"""Signed entries: validating a document, uploading it as its endorser's latest for the image, the facts an
image's first entry fixes, and the display columns of images.

gpg (the signature check) runs before any transaction opens; the upload's transaction then holds the
endorser's and the image's row locks for as short a time as it can.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import F, Min
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


def issuer_fingerprint(md: metadata.Metadata) -> str:
    """The fingerprint ``slreq:issuer`` names (``OpenPGP:<40 hex>``), upper case, or "" (the verifier refuses
    an entry whose signer is not its issuer)."""
    issuer = md.endorsement.issuer.strip()
    value = issuer.split(":", 1)[1].strip() if issuer.lower().startswith("openpgp:") else ""
    return value.upper() if len(value) == 40 else ""


@dataclass(frozen=True)
class KeyBook:
    """The keys verification asks the database about, read once for one document or a bulk import's chunk of
    them: the site keys (fingerprint → e-mail) and the registered keys (with their owners) of the fingerprints
    asked for, upper case; a fingerprint not asked for is read when it is needed."""

    site_keys: Mapping[str, str]
    keys: Mapping[str, PgpKey]
    asked: frozenset[str]

    def key(self, fingerprint: str) -> PgpKey | None:
        if fingerprint in self.asked:
            return self.keys.get(fingerprint)
        return PgpKey.objects.filter(fingerprint=fingerprint).select_related("owner").first()


def key_book(fingerprints: Iterable[str]) -> KeyBook:
    """The site keys and the registered keys of ``fingerprints`` (the issuers entries name): two queries at most."""
    site_keys = {fp.upper(): mail.strip().lower() for fp, mail in SiteKey.objects.values_list("fingerprint", "email")}
    asked = frozenset(fp.upper() for fp in fingerprints if fp) - site_keys.keys()
    keys = (
        {key.fingerprint.upper(): key for key in PgpKey.objects.select_related("owner").filter(fingerprint__in=asked)}
        if asked
        else {}
    )
    return KeyBook(site_keys, keys, asked)


def _signature_report(
    raw: bytes, md: metadata.Metadata, *, check_endorser: bool = True, book: KeyBook | None = None
) -> tuple[SignatureReport, PgpKey | None]:
    """Verify the signature against the trusted keyring, then against who owns the key (DESIGN §2.2).

    The key must be the site key or registered to an account, unrevoked now; ``slreq:email`` must be the
    e-mail its owner holds (the account's, or the site's); and (``check_endorser``) the endorser e-mail must not
    belong to another account (or to the site) already. A legacy XML-DSig signature's certificate, vouched for by
    a trusted CA, holds the e-mails it carries (``_certificate_report``). Reads only, two queries (none when the
    caller gives the ``book`` of keys) and one gpg process: the key that the entry's issuer names is read first,
    and the verification takes its facts from that row. ``entry_upload`` checks the endorser again under its row
    lock."""
    claimed = issuer_fingerprint(md)
    book = book if book is not None else key_book([claimed])
    site_keys = book.site_keys
    issuer_key = book.key(claimed) if claimed and claimed not in site_keys else None
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
            if issuer_key is not None and issuer_key.fingerprint.upper() == fingerprint
            else book.key(fingerprint)
        )
        if key is None:
            return _refused(
                check, "unregistered-key", f"The signing key {fingerprint} is not registered with the Marketplace."
            ), None
        if key.revoked_at is not None:
            # Whatever the entry's created time says: a revoked key makes no new endorsements.
            return _refused(check, "revoked-key", _revoked_message(fingerprint, key.revoked_at)), key
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


def _revoked_message(fingerprint: str, revoked_at: dt.datetime) -> str:
    return (
        f"The signing key {fingerprint} was revoked on {revoked_at:%Y-%m-%dT%H:%M:%SZ}; entries signed with it are "
        "no longer accepted, whatever their created time."
    )


def _holder(verified: VerifiedEntry) -> tuple[int | None, str]:
    """Whose the endorser e-mail becomes with its first entry: the key's account, a legacy certificate's subject,
    or the site (neither)."""
    return (verified.key.owner_id if verified.key is not None else None, verified.report.certificate_subject)


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


def _image_fix(
    *,
    md: metadata.Metadata,
    created: dt.datetime,
    display: Mapping[str, Any],
    judge: Callable[[Image], None] | None = None,
) -> tuple[Image, bool]:
    """The image row of ``md``'s identifier, locked, and whether this entry made it: made from this entry if it
    is the first (shown with its claims ``display``: the only entry is the most trusted one; ``judge`` sets its
    verdict columns before it is written), else checked against what the first accepted entry fixed (size,
    checksums) and completed with checksums it lacked.

    Precondition: inside the upload's transaction (after the endorser's row lock)."""
    claimed = _claimed_checksums(md)
    image = Image.objects.select_for_update().filter(identifier=md.identifier).first()
    if image is None:
        made = _image_new(md, claimed=claimed, created=created, display=display)
        if judge is not None:
            judge(made)
        try:
            with transaction.atomic():
                made.save(force_insert=True)
                return made, True
        except IntegrityError:  # another upload made this identifier's row first (and has committed)
            image = Image.objects.select_for_update().get(identifier=md.identifier)
    refusal = _facts_refusal(image, md=md, claimed=claimed)
    if refusal is not None:
        raise refusal
    if _checksums_complete(image, claimed):
        Image.objects.filter(pk=image.pk).update(checksums=image.checksums, sha256=image.sha256)
    return image, False


def _image_new(
    md: metadata.Metadata, *, claimed: dict[str, str], created: dt.datetime, display: Mapping[str, Any]
) -> Image:
    """The image row the first accepted entry of ``md``'s identifier makes (not saved): its facts fixed by that
    entry, shown with its claims ``display``."""
    return Image(
        identifier=md.identifier,
        sha1=md.sha1.lower(),
        bytes=md.bytes,
        checksums=claimed,
        sha256=claimed.get("SHA-256", ""),
        first_endorsed=created,
        updated=created,
        **display,
    )


def _facts_refusal(image: Image, *, md: metadata.Metadata, claimed: Mapping[str, str]) -> ApplicationError | None:
    """Why ``md`` disagrees with what the image's first entries fixed (size, checksums), or None."""
    if md.bytes != image.bytes:
        return ApplicationError(
            f"The image {image.identifier} is {image.bytes} bytes, as its first entry fixed; "
            f"this entry claims {md.bytes}.",
            code="bytes-conflict",
        )
    for algorithm, value in claimed.items():
        fixed = image.checksums.get(algorithm)
        if fixed is not None and fixed != value:
            return ApplicationError(
                f"The image {image.identifier}'s {algorithm} checksum is {fixed}, as its first entry that gave one "
                f"fixed; this entry claims {value}.",
                code="checksum-conflict",
            )
    return None


def _checksums_complete(image: Image, claimed: Mapping[str, str]) -> bool:
    """Add to ``image`` (the instance) the checksums ``claimed`` gives that none fixed yet; whether it gained any."""
    added = {a: v for a, v in claimed.items() if a not in image.checksums}
    if added:
        image.checksums = {**image.checksums, **added}
        image.sha256 = image.checksums.get("SHA-256", "")
    return bool(added)


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


def entry_verify(*, raw: bytes, md: metadata.Metadata | None = None, book: KeyBook | None = None) -> VerifiedEntry:
    """Parse and verify one signed entry, with no transaction open (gpg is slow): refused with 400 naming the
    rule (format, signature, key). Safe to run in several threads at once (bulk import), which pass the document
    already parsed (``md``) and the ``book`` of keys read for many documents at once.

    Precondition: ``md`` is ``metadata.parse(raw)``, when given."""
    md = md if md is not None else metadata.parse(raw)
    report, key = _signature_report(raw, md, check_endorser=False, book=book)
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
        # The first entry fixes whose the endorser e-mail is.
        holder = _holder(verified)
        endorser = _endorser_locked(email=email, subject=md.endorsement.subject[:500], created=created, holder=holder)
        if (endorser.account_id, endorser.certificate_subject) != holder:
            raise ApplicationError(_endorser_taken(email, endorser), code="endorser-taken")
        display = {name: columns[name] for name in selectors.DISPLAY_FIELDS}
        entry = Entry(
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
        now = timezone.now()

        def judge(made: Image) -> None:  # a new image's only latest entry is this one: judged before it is written
            made.latest_entries = [entry]  # type: ignore[attr-defined]
            verdicts.verdicts_judge_locked([made], now=now, causes={made.identifier: _trust_cause(entry, None)})

        image, image_is_new = _image_fix(md=md, created=created, display=display, judge=judge)
        latest = (  # a new image has no timelines yet
            None
            if image_is_new
            else Entry.objects.filter(image=image, endorser=endorser, is_latest=True)
            .only("id", "created", "deprecated")
            .first()
        )
        if latest is not None and created <= latest.created:
            raise _not_newer(md, latest)
        if latest is not None:
            Entry.objects.filter(pk=latest.pk).update(is_latest=False)
        entry.image = image
        entry.save(force_insert=True)
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
        if not image_is_new:  # a new image is shown with its only entry's claims, and was judged by them
            _image_display_update(image, now=now)
            verdicts.image_verdict_write_locked(image, now=now, cause=_trust_cause(entry, latest))
        details = _audit_details(entry, latest, md=md, extra=audit_details)
        audit.record(uploader, audit_action, entry, **details)
    entry.image = image
    entry.endorser = endorser
    return entry


def _not_newer(md: metadata.Metadata, latest: Entry) -> Conflict:
    created = md.endorsement.created
    return Conflict(
        f"{md.endorsement.email.lower()} already has an entry for {md.identifier} created "
        f"{latest.created:%Y-%m-%dT%H:%M:%SZ}; an upload must be newer than that (this one was created "
        f"{created:%Y-%m-%dT%H:%M:%SZ}).",
        code="not-newer",
    )


def _trust_cause(entry: Entry, latest: Entry | None) -> str:
    """Why the image's verdict is rewritten, should it turn denied: the entry deprecates it, or endorses it."""
    if entry.deprecated and (latest is None or not latest.deprecated):
        return TrustChange.Cause.DEPRECATED
    return TrustChange.Cause.ENDORSEMENT


def _audit_details(
    entry: Entry, latest: Entry | None, *, md: metadata.Metadata, extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    if latest is None:
        change = "new"
    elif entry.deprecated and not latest.deprecated:
        change = "deprecated"
    elif latest.deprecated and not entry.deprecated:
        change = "undeprecated"
    else:
        change = "updated"
    return {
        "identifier": md.identifier,
        "endorser": md.endorsement.email.lower(),
        "created": md.endorsement.created.isoformat(),
        "fingerprint": entry.fingerprint,
        "change": change,
        "deprecated": entry.deprecated_reason if entry.deprecated else None,
        **(extra or {}),
    }


# --- Many verified entries at once (bulk import) ----------------------------------------------------------------


def entries_store(
    verified: Sequence[VerifiedEntry],
    *,
    uploader: Any,
    audit_action: str = "marketplace.entry.imported",
    audit_details: Mapping[str, Any] | None = None,
) -> list[Entry | ApplicationError]:
    """Store verified entries as ``entry_store`` would one after the other, with the same checks, refusals and
    bookkeeping (is_latest, endorser counters, display columns, verdicts and trust changes, audit rows), in one
    transaction per group of entries for distinct images. Returns each one's ``Entry``, or the error that refused it
    (nothing of a refused entry is stored; the others are).

    Each image's entries are stored in the order given (so each timeline goes oldest first, when given so): an
    entry for an image already in the group waits for a later group, and so do the image's entries after it; entries
    of different images may be stored in another order than given. Locks as ``entry_store`` does, endorsers before
    images: the group's endorser rows (by e-mail; the missing ones made first), then its image rows (by id; the
    missing ones made last, by identifier)."""
    outcomes: list[Entry | ApplicationError | None] = [None] * len(verified)
    pending = list(enumerate(verified))
    while pending:
        group: list[tuple[int, VerifiedEntry]] = []
        later: list[tuple[int, VerifiedEntry]] = []
        identifiers: set[str] = set()
        for index, item in pending:
            (later if item.md.identifier in identifiers else group).append((index, item))
            identifiers.add(item.md.identifier)
        stored = _group_store(
            [item for _index, item in group], uploader=uploader, action=audit_action, details=audit_details
        )
        for (index, _item), result in zip(group, stored, strict=True):
            outcomes[index] = result
        pending = later
    return cast(list[Entry | ApplicationError], outcomes)  # each one decided above


_RETRIES = 3  # a group met rows another transaction was making: read again under lock, then go one by one
_RETRYABLE = {"40P01", "40001"}  # deadlock detected, serialization failure


def _group_store(
    group: list[VerifiedEntry], *, uploader: Any, action: str, details: Mapping[str, Any] | None
) -> list[Entry | ApplicationError]:
    for _attempt in range(_RETRIES):
        try:
            with transaction.atomic():
                return _group_store_locked(group, uploader=uploader, action=action, details=details)
        except IntegrityError:
            continue  # another transaction made an endorser or image row of the group: read it under lock this time
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) not in _RETRYABLE:
                raise
    # Still racing: one entry at a time, as uploads are stored.
    outcomes: list[Entry | ApplicationError] = []
    for item in group:
        try:
            outcomes.append(entry_store(item, uploader=uploader, audit_action=action, audit_details=details))
        except ApplicationError as exc:
            outcomes.append(exc)
    return outcomes


@dataclass
class _Timeline:
    """An endorser's row as the group's entries change it, in order (``entry_store``'s updates, replayed)."""

    endorser: Endorser
    made: bool  # made by this group: its holder is fixed by its first accepted entry
    fixed: bool = False
    entries: int = 0


def _group_store_locked(
    group: list[VerifiedEntry], *, uploader: Any, action: str, details: Mapping[str, Any] | None
) -> list[Entry | ApplicationError]:
    """Precondition: inside a transaction; each image at most once in ``group``."""
    emails = sorted({item.md.endorsement.email.lower() for item in group})
    timelines = {
        e.email: _Timeline(e, made=False)
        for e in Endorser.objects.select_for_update().filter(email__in=emails).order_by("email")
    }
    made = []
    for item in group:
        email, endorsement = item.md.endorsement.email.lower(), item.md.endorsement
        if email not in timelines:
            holder = _holder(item)
            endorser = Endorser(
                email=email,
                subject=endorsement.subject[:500],
                first_endorsed=endorsement.created,
                last_endorsed=endorsement.created,
                account_id=holder[0],
                certificate_subject=holder[1],
            )
            timelines[email] = _Timeline(endorser, made=True)
            made.append(endorser)
    if made:  # before any image lock, as entry_store makes its endorser before it locks its image
        Endorser.objects.bulk_create(sorted(made, key=lambda e: e.email))
    images = {
        image.identifier: image
        for image in Image.objects.select_for_update()
        .filter(identifier__in=[item.md.identifier for item in group])
        .order_by("pk")
    }
    latest_entries: dict[int, list[Entry]] = {image.pk: [] for image in images.values()}
    for row in (
        Entry.objects.filter(image__in=list(images.values()), is_latest=True)
        .select_related("endorser", "key")
        .defer("raw", "details", "search_text", "description")
    ):
        latest_entries[row.image_id].append(row)
    revoked = dict(
        PgpKey.objects.filter(
            pk__in={i.key.pk for i in group if i.key is not None}, revoked_at__isnull=False
        ).values_list("pk", "revoked_at")
    )

    now = timezone.now()
    outcomes: list[Entry | ApplicationError | None] = [None] * len(group)
    accepted: list[tuple[int, VerifiedEntry, Image | None, Entry | None, _Timeline]] = []
    for index, item in enumerate(group):
        md, created = item.md, item.md.endorsement.created
        timeline = timelines[md.endorsement.email.lower()]
        endorser = timeline.endorser
        holder = _holder(item)
        if (not timeline.made or timeline.fixed) and (endorser.account_id, endorser.certificate_subject) != holder:
            outcomes[index] = ApplicationError(_endorser_taken(endorser.email, endorser), code="endorser-taken")
            continue
        if item.key is not None and item.key.pk in revoked:  # revoked since it was verified
            outcomes[index] = ApplicationError(
                _revoked_message(item.key.fingerprint.upper(), revoked[item.key.pk] or now), code="revoked-key"
            )
            continue
        image = images.get(md.identifier)
        latest = None
        if image is not None:
            refusal = _facts_refusal(image, md=md, claimed=_claimed_checksums(md))
            if refusal is not None:
                outcomes[index] = refusal
                continue
            latest = next((e for e in latest_entries[image.pk] if e.endorser_id == endorser.pk), None)
            if latest is not None and created <= latest.created:
                outcomes[index] = _not_newer(md, latest)
                continue
        if timeline.made and not timeline.fixed:  # its first accepted entry makes it, as in entry_store
            endorser.account_id, endorser.certificate_subject = holder
            endorser.subject = md.endorsement.subject[:500]
            endorser.first_endorsed = endorser.last_endorsed = created
            timeline.fixed = True
        timeline.entries += 1
        if created >= endorser.last_endorsed:
            endorser.subject, endorser.last_endorsed = md.endorsement.subject[:500], created
        accepted.append((index, item, image, latest, timeline))

    user = uploader if getattr(uploader, "is_authenticated", False) else None
    entries: list[Entry] = []
    new_images: list[Image] = []
    changed: dict[int, Image] = {}  # existing images whose row changes besides the verdict
    causes: dict[str, str] = {}
    for _index, item, image, latest, timeline in accepted:
        md, created = item.md, item.md.endorsement.created
        columns = _entry_columns(md)
        claimed = _claimed_checksums(md)
        if image is None:
            image = _image_new(
                md, claimed=claimed, created=created, display={name: columns[name] for name in selectors.DISPLAY_FIELDS}
            )
            new_images.append(image)
        else:
            if _checksums_complete(image, claimed):
                changed[image.pk] = image
            if created > image.updated:
                image.updated = created
                changed[image.pk] = image
        entry = Entry(
            image=image,
            endorser=timeline.endorser,
            created=created,
            subject=md.endorsement.subject[:500],
            issuer=md.endorsement.issuer[:500],
            fingerprint=item.report.fingerprint or "",
            key=item.key,
            raw=item.raw,
            uploader=user,
            is_latest=True,
            **columns,
        )
        entries.append(entry)
        kept = [] if image.pk is None else [e for e in latest_entries[image.pk] if latest is None or e.pk != latest.pk]
        image.latest_entries = sorted([*kept, entry], key=lambda e: e.endorser.email)  # type: ignore[attr-defined]
        causes[image.identifier] = _trust_cause(entry, latest)

    if new_images:
        # A new image's verdict from its only entry, before its row is written (one statement for all of them).
        new_images.sort(key=lambda i: i.identifier)
        verdicts.verdicts_judge_locked(new_images, now=now, causes=causes)
        Image.objects.bulk_create(new_images)
        if _claims_among(new_images):  # two new images claim one SHA-256: the ids decide which claimed it first
            verdicts.verdicts_judge_locked(new_images, now=now, causes=causes)
            Image.objects.bulk_update(new_images, ["verdict", "verdict_policy", "verdict_until"])
    superseded = [latest.pk for _i, _item, _image, latest, _t in accepted if latest is not None]
    if superseded:
        Entry.objects.filter(pk__in=superseded).update(is_latest=False)
    _entries_insert(entries)

    touched = {t.endorser.email: t for *_rest, t in accepted}
    unused = [t.endorser.pk for t in timelines.values() if t.made and not t.fixed]
    if unused:  # made for entries that were all refused: entry_store would have rolled it back
        Endorser.objects.filter(pk__in=unused).delete()
    for timeline in touched.values():
        timeline.endorser.entry_count += timeline.entries
    if touched:
        Endorser.objects.bulk_update(
            [t.endorser for t in touched.values()],
            ["entry_count", "subject", "first_endorsed", "last_endorsed", "account_id", "certificate_subject"],
        )

    existing = [image for _i, _item, image, _l, _t in accepted if image is not None]
    if existing:  # display columns (the timelines' order counts) and verdicts, then one statement
        starts: dict[int, dict[int, int]] = {}
        for image_id, endorser_id, first in (
            Entry.objects.filter(image__in=existing)
            .order_by()
            .values("image_id", "endorser_id")
            .annotate(first=Min("pk"))
            .values_list("image_id", "endorser_id", "first")
        ):
            starts.setdefault(image_id, {})[endorser_id] = first
        for image in existing:
            choice = selectors.image_display_choice(
                sorted(image.latest_entries, key=lambda e: e.pk),  # type: ignore[attr-defined]
                timeline_starts=starts.get(image.pk, {}),
                now=now,
            )
            if choice is not None:
                for name in selectors.DISPLAY_FIELDS:
                    setattr(image, name, getattr(choice, name))
        verdicts.verdicts_judge_locked(existing, now=now, causes=causes)
        Image.objects.bulk_update(
            existing,
            [
                "verdict",
                "verdict_policy",
                "verdict_until",
                *(["checksums", "sha256", "updated"] if changed else []),
                *selectors.DISPLAY_FIELDS,
            ],
        )
    audit.record_many(
        uploader,
        action,
        [
            (entry, _audit_details(entry, latest, md=item.md, extra=details))
            for (_i, item, _image, latest, _t), entry in zip(accepted, entries, strict=True)
        ],
    )
    for (index, *_rest), entry in zip(accepted, entries, strict=True):
        outcomes[index] = entry
    return cast(list[Entry | ApplicationError], outcomes)  # each one decided above


def _claims_among(images: list[Image]) -> bool:
    """Whether two of ``images`` claim one SHA-256."""
    claims = [image.sha256 for image in images if image.sha256]
    return len(claims) != len(set(claims))


def _entries_insert(entries: list[Entry]) -> None:
    """Insert new entries (ids set on them): on PostgreSQL with ids drawn from the table's sequence and the rows
    sent by COPY, which costs a fraction of a multi-row INSERT's compiling and parsing; elsewhere ``bulk_create``.
    Every column's value is what Django would write (``pre_save``, ``get_db_prep_save``)."""
    if connection.vendor != "postgresql" or not entries:
        Entry.objects.bulk_create(entries)
        return
    fields = list(Entry._meta.concrete_fields)
    table = Entry._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", [table, len(entries)]
        )
        for entry, (pk,) in zip(entries, cursor.fetchall(), strict=True):
            entry.pk = pk
            entry.image = entry.image  # a new image got its id after the entry was given it: take it (and keep it)
        columns = ", ".join(connection.ops.quote_name(f.column or f.name) for f in fields)
        statement = f"COPY {connection.ops.quote_name(table)} ({columns}) FROM STDIN"
        with connection.wrap_database_errors, cursor.cursor.copy(statement) as copy:  # Django's error classes
            for entry in entries:
                copy.write_row([f.get_db_prep_save(f.pre_save(entry, True), connection) for f in fields])
    for entry in entries:
        entry._state.adding = False
        entry._state.db = connection.alias
