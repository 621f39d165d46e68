"""HEPiX image list subscriptions (issue 16): reading a signed list, turning its images into Marketplace entries
endorsed by the list's endorser, and following the list's next versions.

A list is read (``sources``), its S/MIME signature verified against the site's CAs (``signing.smime``), its JSON
read (``imagelists``) and its endorser bound to the signing certificate — ``hv:dn`` is the certificate's subject,
``hv:ca`` its issuer, ``hv:email`` one of its e-mails and not an e-mail another account, certificate or the site
holds. The Marketplace names an image by the SHA-1 of its bytes and a list by a UUID and a SHA-512, so each image
new to the subscription is downloaded once (bounded by its ``hv:size``) to compute the SHA-1 while checking the
SHA-512; the UUID is kept beside it (``ImageListImage``, and in the entry's search text). Each image then becomes
an entry of the list's endorser, created at ``dc:date:created``, expiring at ``dc:date:expires``, through the
same ``entry_store`` as an upload; an image that left the list gets a newer entry deprecating it. All of one list
version is stored in one transaction, or nothing; downloads and openssl run before it opens.

A list that is not newer than the last accepted one — an older or equal ``hv:version`` or ``dc:date:created`` —
is refused as a replay, unless it is the very same signed message (nothing changed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from alto_metadata import redeclared
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core import audit
from core.errors import ApplicationError, Conflict, NotFound
from marketplace import imagelists, metadata, selectors, sources
from marketplace.imagelists import ImageList, ListImage
from marketplace.models import Endorser, Entry, ImageListImage, ImageListSubscription, ImageListVersion
from marketplace.services.entries import CLOCK_SKEW, SignatureReport, VerifiedEntry, _endorser_taken, entry_store
from marketplace.signing import smime, x509

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
ENTRY_TYPE = "imagelist"
MAX_SOURCE_CHARS = 2000  # ImageListSubscription.source


class ImageListRefused(ApplicationError):
    """A list (or one of its images) that cannot be accepted; ``code`` names the rule."""

    status = 400


@dataclass(frozen=True)
class Identity:
    """What the Marketplace calls a list's image: its identifier (from the SHA-1 of its bytes)."""

    sha1: str
    identifier: str


@dataclass(frozen=True)
class CheckedList:
    """A list whose signature, content and endorser passed, with the identity of each of its images."""

    raw: bytes
    imagelist: ImageList
    signer: x509.Signer
    identities: dict[str, Identity] = field(default_factory=dict)


@dataclass(frozen=True)
class Refresh:
    """What reading a subscription's list did: ``change`` is ``new``, ``updated``, ``unchanged`` or ``refused``
    (then ``code`` and ``message`` say why); the uuids of images added, kept and deprecated."""

    subscription: ImageListSubscription
    change: str
    added: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    deprecated: tuple[str, ...] = ()
    code: str = ""
    message: str = ""


def _max_bytes() -> int:
    return int(getattr(settings, "MARKETPLACE_IMAGELIST_MAX_BYTES", DEFAULT_MAX_BYTES))


def _max_entry_bytes() -> int:
    return int(getattr(settings, "MARKETPLACE_MAX_ENTRY_BYTES", metadata.DEFAULT_MAX_BYTES))


def _limits() -> sources.Limits:
    return sources.Limits(
        io_timeout=float(getattr(settings, "MARKETPLACE_IMAGELIST_IO_TIMEOUT", 30.0)),
        page_deadline=float(getattr(settings, "MARKETPLACE_IMAGELIST_DEADLINE", 300.0)),
    )


def _image_limits() -> sources.Limits:
    return sources.Limits(
        io_timeout=float(getattr(settings, "MARKETPLACE_IMAGELIST_IO_TIMEOUT", 30.0)),
        page_deadline=float(getattr(settings, "MARKETPLACE_IMAGELIST_IMAGE_DEADLINE", 3600.0)),
    )


def source_normalise(source: str) -> str:
    """A subscription's source as stored: an http(s) URL as given, a file as its absolute path."""
    source = source.strip()
    if not source:
        raise ImageListRefused("Name an image list: an http(s) URL or a file.", code="source-missing")
    if len(source) > MAX_SOURCE_CHARS:
        raise ImageListRefused(
            f"An image list's source is at most {MAX_SOURCE_CHARS} characters.", code="source-too-long"
        )
    if sources.is_url(source):
        return source
    if "://" in source:
        raise ImageListRefused(f"{source!r} is neither an http(s) URL nor a file.", code="scheme-refused")
    return str(Path(source).expanduser().resolve())


def imagelist_read(source: str) -> bytes:
    """The signed list at ``source`` (URL or file), bounded by ``MARKETPLACE_IMAGELIST_MAX_BYTES``."""
    try:
        if sources.is_url(source):
            return sources.web_fetch(source, max_bytes=_max_bytes(), limits=_limits(), what="image list")
        return sources.file_fetch(Path(source), max_bytes=_max_bytes(), what="image list")
    except sources.SourceError as exc:
        raise ImageListRefused(exc.message, code=exc.code) from None


def imagelist_check(raw: bytes, *, now: datetime | None = None) -> CheckedList:
    """Verify a signed list and bind its endorser to the signing certificate, without downloading its images or
    storing anything. Raises :class:`ImageListRefused` (or :class:`imagelists.ImageListInvalid`) naming the rule."""
    now = now or timezone.now()
    try:
        signed = smime.verify(raw, now=now)
    except x509.X509Refused as refused:
        raise ImageListRefused(refused.message, code=refused.check) from None
    imagelist = imagelists.parse(signed.content)
    signer, endorser = signed.signer, imagelist.endorser
    if not x509.dn_equal(endorser.dn, signer.subject):
        raise ImageListRefused(
            f"The list's hv:dn is {endorser.dn!r} but it was signed with the certificate of {signer.subject_text}.",
            code="subject-mismatch",
        )
    if not x509.dn_equal(endorser.ca, signer.issuer):
        raise ImageListRefused(
            f"The list's hv:ca is {endorser.ca!r} but the signing certificate was issued by "
            f"{x509.dn_text(signer.issuer)}.",
            code="issuer-mismatch",
        )
    if endorser.email not in signer.emails:
        raise ImageListRefused(
            f"The list's hv:email {endorser.email} is not an e-mail of the signing certificate "
            f"({', '.join(signer.emails) or 'none'}).",
            code="email-not-on-certificate",
        )
    if endorser.email in selectors.site_emails():
        raise ImageListRefused(
            f"hv:email {endorser.email} is the site's e-mail: only the site key endorses as it.",
            code="email-not-owner",
        )
    holder = Endorser.objects.filter(email=endorser.email).only("account_id", "certificate_subject").first()
    if holder is not None and (holder.account_id, holder.certificate_subject) != (None, signer.subject_text):
        raise ImageListRefused(_endorser_taken(endorser.email, holder), code="endorser-taken")
    if imagelist.created > now + CLOCK_SKEW:
        raise ImageListRefused(
            f"The list's dc:date:created {imagelist.created:%Y-%m-%dT%H:%M:%SZ} is in the future.",
            code="created-in-future",
        )
    if imagelist.expires <= now:
        raise ImageListRefused(
            f"The list expired at {imagelist.expires:%Y-%m-%dT%H:%M:%SZ}: its endorser must publish a new one.",
            code="list-expired",
        )
    return CheckedList(raw, imagelist, signer)


def _image_download(image: ListImage) -> Identity:
    """Read the image once, bounded by its ``hv:size``, for its SHA-1 (the Marketplace's name for it), checking
    the size and SHA-512 the list signed."""
    sha1, sha512, size = hashlib.sha1(usedforsecurity=False), hashlib.sha512(), 0
    try:
        for chunk in sources.web_stream(image.uri, max_bytes=image.size, limits=_image_limits(), what="image"):
            sha1.update(chunk)
            sha512.update(chunk)
            size += len(chunk)
    except sources.SourceError as exc:
        raise ImageListRefused(
            f"The image {image.identifier} cannot be read from {image.uri}: {exc.message}", code=f"image-{exc.code}"
        ) from None
    if size != image.size:
        raise ImageListRefused(
            f"The image {image.identifier} at {image.uri} is {size} bytes; the list says {image.size}.",
            code="image-size-mismatch",
        )
    if sha512.hexdigest() != image.sha512:
        raise ImageListRefused(
            f"The image {image.identifier} at {image.uri} does not have the SHA-512 the list signed.",
            code="image-checksum-mismatch",
        )
    return Identity(sha1.hexdigest(), metadata.identifier_from_sha1(sha1.hexdigest()))


def _identities(checked: CheckedList) -> CheckedList:
    """Each image's identity: known from an earlier list version (the same UUID and SHA-512 were downloaded and
    checked before), else downloaded now. A claim that someone else's entry makes is never taken for it."""
    images = checked.imagelist.images
    known = {
        (row["uuid"], row["sha512"]): (row["image__sha1"], row["image__identifier"], row["image__bytes"])
        for row in ImageListImage.objects.filter(uuid__in=[i.identifier for i in images]).values(
            "uuid", "sha512", "image__sha1", "image__identifier", "image__bytes"
        )
    }
    identities: dict[str, Identity] = {}
    for image in images:
        found = known.get((image.identifier, image.sha512))
        if found is not None and found[2] == image.size:
            identities[image.identifier] = Identity(found[0], found[1])
        else:
            identities[image.identifier] = _image_download(image)
    by_identifier: dict[str, str] = {}
    for uuid, identity in identities.items():
        if identity.identifier in by_identifier:
            raise ImageListRefused(
                f"The images {by_identifier[identity.identifier]} and {uuid} of the list are the same bytes "
                f"(Marketplace image {identity.identifier}): each image must appear once.",
                code="duplicate-image",
            )
        by_identifier[identity.identifier] = uuid
    return CheckedList(checked.raw, checked.imagelist, checked.signer, identities)


def _entry_document(checked: CheckedList, image: ListImage) -> VerifiedEntry:
    """The Marketplace entry (DESIGN §2.1) that the list's signature vouches for: the image's claims, the list's
    endorser and dates. Its signature is the list's (stored in ``ImageListVersion``)."""
    imagelist = checked.imagelist
    identity = checked.identities[image.identifier]
    unsigned = metadata.build(
        image_bytes=image.size,
        checksums={"SHA-1": identity.sha1, "SHA-512": image.sha512},
        type=ENTRY_TYPE,
        endorser_email=imagelist.endorser.email,
        title=image.title,
        description=image.description or image.comments,
        creator=imagelist.endorser.creator,
        os=image.os,
        os_version=image.os_version,
        os_arch=image.arch,
        kind="machine",
        format=image.format,
        locations=[image.uri],
        valid=imagelist.expires,
        version=image.version,
        hypervisor=image.hypervisor,
        alternative=image.identifier,
        publisher=imagelist.source,
    )
    return _verified(checked, unsigned)


def _verified(checked: CheckedList, unsigned: bytes) -> VerifiedEntry:
    signer = checked.signer
    raw = metadata.endorse(
        unsigned,
        email=checked.imagelist.endorser.email,
        subject=signer.subject_text,
        issuer=x509.dn_text(signer.issuer),
        created=checked.imagelist.created,
    )
    try:
        md = metadata.parse(raw)
    except metadata.MetadataInvalid as invalid:
        raise ImageListRefused(
            f"An image of the list cannot be a Marketplace entry: {invalid}", code=invalid.code
        ) from None
    report = SignatureReport(
        "smime",
        True,
        signer.fingerprint,
        None,
        f"In an image list signed by {signer.subject_text} with a certificate of {x509.dn_text(signer.issuer)}.",
        certificate_subject=signer.subject_text,
    )
    return VerifiedEntry(raw, md, report, None)


def _deprecation_document(checked: CheckedList, latest: Entry, subscription: ImageListSubscription) -> VerifiedEntry:
    reason = (
        f"Left the image list {checked.imagelist.identifier} ({subscription.source}) in its version "
        f"{checked.imagelist.version}."
    )
    return _verified(checked, redeclared(bytes(latest.raw), deprecated=reason, max_bytes=_max_entry_bytes()))


def _replay(subscription: ImageListSubscription, imagelist: ImageList, raw: bytes) -> bool:
    """Whether ``raw`` is the list already accepted (True: nothing to do); refused when it is not newer.

    Precondition: the subscription's row lock is held."""
    if subscription.list_created is None:
        return False
    if subscription.list_identifier and imagelist.identifier != subscription.list_identifier:
        raise ImageListRefused(
            f"The source now serves the list {imagelist.identifier}, not the subscribed list "
            f"{subscription.list_identifier}.",
            code="list-identifier-changed",
        )
    last = subscription.versions.order_by("-created").only("raw").first()
    if last is not None and bytes(last.raw) == raw:
        return True
    held_by = (
        Endorser.objects.filter(pk=subscription.endorser_id).values_list("email", flat=True).first()
        if subscription.endorser_id is not None
        else None
    )
    if held_by is not None and held_by != imagelist.endorser.email:
        # The new endorser could not deprecate the old one's images (it does not hold that e-mail): a site that
        # trusts the new endorser unsubscribes and subscribes again, deliberately.
        raise ImageListRefused(
            f"The list is now endorsed by {imagelist.endorser.email}, not by {held_by} who endorsed the subscribed "
            "list: unsubscribe and subscribe again to follow the new endorser.",
            code="endorser-changed",
        )
    if imagelist.created <= subscription.list_created or imagelists.version_key(
        imagelist.version
    ) <= imagelists.version_key(subscription.version):
        raise Conflict(
            f"This list (version {imagelist.version}, created {imagelist.created:%Y-%m-%dT%H:%M:%SZ}) is not newer "
            f"than the accepted one (version {subscription.version}, created "
            f"{subscription.list_created:%Y-%m-%dT%H:%M:%SZ}): a replayed list is refused.",
            code="list-replayed",
        )
    return False


def _apply(subscription: ImageListSubscription, checked: CheckedList, *, actor: Any) -> Refresh:
    """Store a checked list version: one entry per image, one deprecation per image that left, the signed list.

    Precondition: inside a transaction holding the subscription's row lock; the replay check passed."""
    imagelist, signer = checked.imagelist, checked.signer
    last = subscription.versions.order_by("-created").only("id").first()
    before = {
        row.uuid: row
        for row in ImageListImage.objects.filter(list_version=last, in_list=True).select_related("image", "entry")
    }
    version = ImageListVersion.objects.create(
        subscription=subscription,
        version=imagelist.version,
        created=imagelist.created,
        expires=imagelist.expires,
        raw=checked.raw,
        signer_subject=signer.subject_text,
        signer_issuer=x509.dn_text(signer.issuer),
        fingerprint=signer.fingerprint,
    )
    details = {"imagelist": subscription.source, "list_identifier": imagelist.identifier, "version": imagelist.version}
    endorser: Endorser | None = None
    rows = []
    for image in imagelist.images:
        entry = entry_store(
            _entry_document(checked, image),
            uploader=actor,
            audit_action="marketplace.entry.imagelist",
            audit_details={**details, "uuid": image.identifier},
        )
        # The list's name for the image finds it too (``q``); the column is the Marketplace's search text.
        Entry.objects.filter(pk=entry.pk).update(search_text=f"{entry.search_text}\n{image.identifier}")
        endorser = entry.endorser
        rows.append(
            ImageListImage(
                list_version=version, uuid=image.identifier, image=entry.image, entry=entry, sha512=image.sha512
            )
        )
    listed = {image.identifier for image in imagelist.images}
    deprecated = []
    for uuid, row in sorted(before.items()):
        if uuid in listed:
            continue
        latest = Entry.objects.filter(image=row.image, endorser__email=imagelist.endorser.email, is_latest=True).first()
        if latest is None or latest.created >= imagelist.created:
            continue  # the endorser said something newer about it already
        entry = entry_store(
            _deprecation_document(checked, latest, subscription),
            uploader=actor,
            audit_action="marketplace.entry.imagelist",
            audit_details={**details, "uuid": uuid, "left_list": True},
        )
        endorser = entry.endorser
        rows.append(
            ImageListImage(
                list_version=version, uuid=uuid, image=row.image, entry=entry, sha512=row.sha512, in_list=False
            )
        )
        deprecated.append(uuid)
    ImageListImage.objects.bulk_create(rows)
    change = "updated" if subscription.list_created is not None else "new"
    now = timezone.now()
    subscription.list_identifier = imagelist.identifier
    subscription.title = imagelist.title[:500]
    subscription.version = imagelist.version
    subscription.list_created = imagelist.created
    subscription.expires = imagelist.expires
    subscription.endorser = endorser or Endorser.objects.filter(email=imagelist.endorser.email).first()
    subscription.state = ImageListSubscription.State.ACTIVE
    subscription.error_code = subscription.error_message = ""
    subscription.last_fetched = subscription.last_changed = now
    subscription.save()
    added = tuple(sorted(listed - set(before)))
    kept = tuple(sorted(listed & set(before)))
    audit.record(
        actor,
        "marketplace.imagelist.subscribed" if change == "new" else "marketplace.imagelist.updated",
        subscription,
        **details,
        created=imagelist.created.isoformat(),
        expires=imagelist.expires.isoformat(),
        signer=signer.subject_text,
        added=list(added),
        kept=list(kept),
        deprecated=deprecated,
    )
    return Refresh(subscription, change, added, kept, tuple(deprecated))


def _prepare(raw: bytes, subscription: ImageListSubscription | None) -> CheckedList | None:
    """The checks that need no lock, then the downloads: None when ``raw`` is the list already accepted."""
    checked = imagelist_check(raw)
    # A first look, to skip the downloads for a list already accepted or replayed; checked again under the lock.
    if subscription is not None and _replay(subscription, checked.imagelist, raw):
        return None
    return _identities(checked)


def imagelist_subscribe(*, source: str, actor: Any = None) -> Refresh:
    """Subscribe to the list at ``source`` (an http(s) URL or a file) and store its images; refused, with nothing
    stored, when the list is refused. Subscribing again to a known source refreshes it."""
    source = source_normalise(source)
    existing = ImageListSubscription.objects.filter(source=source).first()
    if existing is not None:
        outcome = imagelist_refresh(subscription_id=existing.pk, actor=actor)
        if outcome.change == "refused":
            raise ImageListRefused(outcome.message, code=outcome.code)
        return outcome
    try:
        raw = imagelist_read(source)
        checked = _prepare(raw, None)
        assert checked is not None  # noqa: S101 - no subscription: never a replay
        with transaction.atomic():
            subscription, made = ImageListSubscription.objects.get_or_create(
                source=source, defaults={"subscribed_by": actor if getattr(actor, "is_authenticated", False) else None}
            )
            subscription = ImageListSubscription.objects.select_for_update().get(pk=subscription.pk)
            if not made and _replay(subscription, checked.imagelist, raw):
                return Refresh(subscription, "unchanged")
            return _apply(subscription, checked, actor=actor)
    except ApplicationError as refused:
        audit.record(
            actor, "marketplace.imagelist.refused", None, imagelist=source, code=refused.code, reason=str(refused)
        )
        raise


def imagelist_refresh(*, subscription_id: int, actor: Any = None) -> Refresh:
    """Read a subscription's list again and store it when it is a newer version. A refused list leaves every image
    as it was and puts the subscription in ``error`` with the rule and the reason (audited); a transient failure
    (openssl could not run) raises for the task to retry."""
    subscription = ImageListSubscription.objects.filter(pk=subscription_id).first()
    if subscription is None:
        raise NotFound("No such image list subscription.", code="not-found")
    try:
        raw = imagelist_read(subscription.source)
        checked = _prepare(raw, subscription)
        with transaction.atomic():
            locked = ImageListSubscription.objects.select_for_update().get(pk=subscription.pk)
            if checked is None or _replay(locked, checked.imagelist, raw):
                locked.state = ImageListSubscription.State.ACTIVE
                locked.error_code = locked.error_message = ""
                locked.last_fetched = timezone.now()
                locked.save(update_fields=["state", "error_code", "error_message", "last_fetched"])
                return Refresh(locked, "unchanged")
            return _apply(locked, checked, actor=actor)
    except ApplicationError as refused:
        with transaction.atomic():
            locked = ImageListSubscription.objects.select_for_update().get(pk=subscription.pk)
            locked.state = ImageListSubscription.State.ERROR
            locked.error_code = refused.code or "refused"
            locked.error_message = str(refused)
            locked.last_fetched = timezone.now()
            locked.save(update_fields=["state", "error_code", "error_message", "last_fetched"])
            audit.record(
                actor,
                "marketplace.imagelist.refused",
                locked,
                imagelist=locked.source,
                code=locked.error_code,
                reason=locked.error_message,
            )
        return Refresh(locked, "refused", code=locked.error_code, message=locked.error_message)


def imagelists_refresh() -> list[Refresh]:
    """Refresh every subscription, one after the other (the periodic task); a refused list never stops the rest."""
    return [
        imagelist_refresh(subscription_id=pk)
        for pk in ImageListSubscription.objects.order_by("pk").values_list("pk", flat=True)
    ]


def imagelist_unsubscribe(*, source: str, actor: Any = None) -> None:
    """Stop following a list. Its entries stay (entries are never deleted) and expire with the last list's expiry;
    the stored list versions go with the subscription."""
    normalised = source_normalise(source)
    with transaction.atomic():
        subscription = ImageListSubscription.objects.select_for_update().filter(source=normalised).first()
        if subscription is None:
            raise NotFound(f"No subscription to {source}.", code="not-found")
        audit.record(
            actor,
            "marketplace.imagelist.unsubscribed",
            subscription,
            imagelist=subscription.source,
            list_identifier=subscription.list_identifier,
            version=subscription.version,
        )
        subscription.delete()
