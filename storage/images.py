"""The image cache (DESIGN §5): a verified, uncompressed local copy of a Marketplace image, one per identifier for
every worker process and host, downloaded from the locations of the endorsements the site policy trusts.

:func:`image_cache_ensure` is what the worker's prepare step calls. The first caller claims the identifier's
``CachedImage`` row (``downloading``, with a claim token) in a short transaction, downloads with no transaction
open (``storage.downloads``), and finishes in another short transaction that holds only while its claim does.
A concurrent caller does not download again: it polls the row until the download is done, and returns its copy
or raises its failure; a claim older than ``IMAGE_DOWNLOAD_TIMEOUT`` (its downloader died) is taken over.

The policy is evaluated again by the caller after this returns (DESIGN §2.4: after the bytes are checked);
:func:`image_cache_source` says which endorsement and location the bytes came from.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core import audit
from core.errors import Conflict, NotFound, PermanentError, TransientError
from core.workflow import transition
from marketplace import policy, selectors
from marketplace.models import Entry, Image
from storage import downloads
from storage.models import CachedImage

# How often a caller waiting for another's download looks at the row again.
POLL_SECONDS = 0.5
# A claim is stale (its downloader is gone) this long after the download's own deadline.
STALE_GRACE_SECONDS = 60
_IDENTIFIER = re.compile(r"^[A-Za-z0-9_-]{27}$")


class ImageCacheError(Exception):
    """The image could not be cached; ``codes`` are the failed checks, ``str(error)`` names each location."""

    def __init__(self, message: str, *, codes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.codes = codes


class ImageCacheTransient(ImageCacheError, TransientError):
    """Trying again later may help (a location timed out or was unreachable, or another download is slow)."""


class ImageCachePermanent(ImageCacheError, PermanentError):
    """Trying again will not help until the Marketplace or the policy changes (no trusted location, wrong bytes)."""


@dataclass(frozen=True)
class Source:
    """A location to try: the trusted current endorsement that gives it, and its compression."""

    entry: Entry
    url: str

    @property
    def compression(self) -> str:
        return self.entry.compression


@dataclass(frozen=True)
class CachedImageSource:
    """Where a cached copy's bytes came from: the endorsement (entry) whose location served them."""

    entry: Entry | None
    location: str

    @property
    def endorser_email(self) -> str:
        return self.entry.endorser.email if self.entry is not None else ""


def _limits() -> downloads.Limits:
    return downloads.Limits(
        deadline=float(settings.IMAGE_DOWNLOAD_TIMEOUT),
        io_timeout=float(settings.IMAGE_DOWNLOAD_IO_TIMEOUT),
        trust_env=bool(settings.IMAGE_DOWNLOAD_TRUST_ENV),
    )


def image_cache_path(identifier: str) -> Path:
    """Where the copy of ``identifier`` lives in ``IMAGE_CACHE_DIR``."""
    if not _IDENTIFIER.match(identifier):
        raise NotFound(f"No image {identifier} in the Marketplace.")
    return Path(settings.IMAGE_CACHE_DIR) / identifier


def image_download_sources(image: Image, *, now: dt.datetime | None = None) -> list[Source]:
    """The locations of ``image``'s current endorsements that the site policy trusts, site endorsements first.

    ``image`` comes from ``selectors.image_get`` (latest entries prefetched). Which endorsements are current and
    trusted is the policy's word (``policy.evaluate``), not re-decided here. Raises :class:`ImageCachePermanent`
    (``policy-denied``) when the policy denies the image: nothing is downloaded for an image that may not run."""
    now = now or timezone.now()
    fingerprints = selectors.site_key_fingerprints()
    decision = policy.evaluate(image, now=now, site_fingerprints=fingerprints)
    if not decision.allowed:
        raise ImageCachePermanent(f"the site policy denies it: {decision.summary}", codes=("policy-denied",))
    trusted = set(decision.trusted_endorsers)
    entries = [
        (fact, entry)
        for entry in selectors.current_endorsements(image, now=now)
        if (fact := policy.endorsement_fact(entry, now=now, site_fingerprints=fingerprints)).label in trusted
    ]
    entries.sort(key=lambda pair: not pair[0].is_site)  # stable: otherwise the selector's order
    seen: set[str] = set()
    sources = []
    for _fact, entry in entries:
        for url in entry.locations:
            if url not in seen:
                seen.add(url)
                sources.append(Source(entry, url))
    return sources


def image_cache_source(*, cached: CachedImage) -> CachedImageSource:
    """Which entry and location the cached bytes came from (for the caller's policy check and audit)."""
    entry = None
    if cached.entry_id is not None:
        entry = Entry.objects.select_related("endorser", "key").filter(pk=cached.entry_id).first()
    return CachedImageSource(entry=entry, location=cached.location)


def _is_present(row: CachedImage) -> bool:
    try:
        return row.bytes is not None and Path(row.path).stat().st_size == row.bytes
    except OSError:
        return False


def _failure(row: CachedImage) -> ImageCacheError:
    kind = ImageCacheTransient if row.failure_transient else ImageCachePermanent
    return kind(f"Image {row.identifier} could not be cached: {row.message}")


def _stale_before(now: dt.datetime) -> dt.datetime:
    return now - dt.timedelta(seconds=settings.IMAGE_DOWNLOAD_TIMEOUT + STALE_GRACE_SECONDS)


def _claim(image: Image) -> tuple[CachedImage | None, CachedImage]:
    """Claim the download of ``image``: (the claimed row, or None when another holds it; the row as found)."""
    now = timezone.now()
    token = uuid.uuid4()
    changes = {"state": CachedImage.State.DOWNLOADING, "claim": token, "claimed_at": now, "finished_at": None}
    try:
        with transaction.atomic():
            row = CachedImage.objects.create(identifier=image.identifier, image=image, **changes)
            audit.record(None, "storage.image_cache.claimed", row, identifier=image.identifier, previous_state="")
            return row, row
    except IntegrityError:
        pass  # another caller inserted it first
    row = CachedImage.objects.get(identifier=image.identifier)
    if row.state == CachedImage.State.READY and _is_present(row):
        return None, row
    if row.state == CachedImage.State.DOWNLOADING and row.claimed_at > _stale_before(now):
        return None, row
    # Failed, ready without its file, or a stale claim: take it over, only if nobody changed it since we looked.
    try:
        with transaction.atomic():
            claimed = transition(
                CachedImage,
                pk=row.pk,
                allowed={"state": [row.state], "claim": [row.claim]},
                changes=changes,
                actor=None,
                action="storage.image_cache.claimed",
                code="image-cache-claimed",
                details={"identifier": row.identifier, "previous_state": row.state},
            )
    except Conflict:
        return None, CachedImage.objects.get(pk=row.pk)
    return claimed, claimed


def _finish(row: CachedImage, changes: dict[str, object], action: str) -> bool:
    """Record the outcome, only while ``row``'s claim still holds; False when another worker took it over (its
    outcome is the one recorded)."""
    try:
        with transaction.atomic():
            transition(
                CachedImage,
                pk=row.pk,
                allowed={"state": [CachedImage.State.DOWNLOADING], "claim": [row.claim]},
                changes={**changes, "finished_at": timezone.now()},
                actor=None,
                action=action,
                code="image-cache-claim-lost",
                details={"identifier": row.identifier},
            )
    except Conflict:
        return False
    return True


def _download(row: CachedImage, image: Image) -> CachedImage | None:
    """Try every trusted location in order until one gives the right bytes; record the outcome. The ready row, or
    None when the claim was taken over meanwhile. No transaction may be open (the download is slow)."""
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("image_cache_ensure() downloads: it must not run inside a transaction")
    try:
        sources = image_download_sources(image)
    except ImageCachePermanent as exc:
        _fail(row, exc.message, transient=False)
        raise ImageCachePermanent(f"Image {image.identifier} is not cached: {exc.message}", codes=exc.codes) from None
    failures: list[downloads.DownloadError] = []
    expected = downloads.Expected(bytes=image.bytes, sha1=image.sha1, sha256=image.sha256)
    target = image_cache_path(image.identifier)
    for source in sources:
        try:
            result = downloads.fetch(
                url=source.url,
                compression=source.compression,
                expected=expected,
                target=target,
                limits=_limits(),
                file_dirs=None,
            )
        except downloads.DownloadError as exc:
            failures.append(exc)
            continue
        held = _finish(
            row,
            {
                "state": CachedImage.State.READY,
                "path": str(result.path),
                "bytes": result.bytes,
                "sha1": result.sha1,
                "sha256": result.sha256,
                "entry": source.entry,
                "location": source.url,
                "message": "",
                "failure_transient": False,
            },
            "storage.image_cache.ready",
        )
        return CachedImage.objects.get(pk=row.pk) if held else None
    if not sources:
        message = "no current endorsement the site policy trusts gives a location to download it from"
        error: ImageCacheError = ImageCachePermanent(f"Image {image.identifier}: {message}", codes=("no-location",))
    else:
        message = "; ".join(str(f) for f in failures)
        transient = any(isinstance(f, downloads.DownloadTransient) for f in failures)
        kind = ImageCacheTransient if transient else ImageCachePermanent
        error = kind(f"Image {image.identifier} could not be cached: {message}", codes=tuple(f.code for f in failures))
    _fail(row, message, transient=isinstance(error, TransientError))
    raise error


def _fail(row: CachedImage, message: str, *, transient: bool) -> None:
    changes = {"state": CachedImage.State.FAILED, "message": message, "failure_transient": transient, "path": ""}
    _finish(row, changes, "storage.image_cache.failed")


def _wait(identifier: str) -> CachedImage:
    """Poll the row another caller is downloading until it is ready (returned) or failed (raised); a claim that
    goes stale meanwhile is taken over by the caller (None)."""
    deadline = time.monotonic() + settings.IMAGE_DOWNLOAD_TIMEOUT + STALE_GRACE_SECONDS
    while time.monotonic() < deadline:
        row = CachedImage.objects.get(identifier=identifier)
        if row.state == CachedImage.State.READY:
            return row
        if row.state == CachedImage.State.FAILED:
            raise _failure(row)
        if row.claimed_at <= _stale_before(timezone.now()):
            raise _Stale
        _pause(POLL_SECONDS)
    raise ImageCacheTransient(f"Image {identifier}: another worker's download did not finish in time")


def _pause(seconds: float) -> None:
    time.sleep(seconds)


class _Stale(Exception):
    """The claim being waited for went stale."""


def image_cache_ensure(*, identifier: str) -> CachedImage:
    """A ``ready`` CachedImage of the Marketplace image ``identifier``: its file in ``IMAGE_CACHE_DIR`` has the
    image's fixed size, SHA-1 and (when fixed) SHA-256. Downloads it if no copy is there, or waits for the worker
    that is downloading it.

    Must run outside any transaction (it downloads). Raises ``NotFound`` for an unknown identifier,
    :class:`ImageCacheTransient` / :class:`ImageCachePermanent` when the image cannot be cached (the row is left
    ``failed`` with the message naming each location and its check). The caller evaluates the policy again
    before using the copy (:func:`image_cache_source` says where the bytes came from)."""
    image_cache_path(identifier)  # refuses what is not an identifier before any query
    # The common case, every VM after an image's first: its copy is there, in one query.
    ready = CachedImage.objects.filter(identifier=identifier, state=CachedImage.State.READY).first()
    if ready is not None and _is_present(ready):
        return ready
    image = selectors.image_get(identifier=identifier)
    for _attempt in range(3):
        claimed, row = _claim(image)
        if claimed is not None:
            downloaded = _download(claimed, image)
            if downloaded is not None:
                return downloaded
            continue  # another worker took the claim over: wait for it
        if row.state == CachedImage.State.READY and _is_present(row):
            return row
        try:
            row = _wait(identifier)
        except _Stale:
            continue
        if _is_present(row):
            return row
    raise ImageCacheTransient(f"Image {identifier}: the cache entry kept changing hands; try again")
