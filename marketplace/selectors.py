"""Marketplace reads. Anyone may read entries, images and endorsers; keys are seen by their owner and staff."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import (
    BooleanField,
    Case,
    CharField,
    Count,
    Exists,
    F,
    IntegerField,
    Min,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Lower
from django.utils import timezone

from core.errors import ApplicationError, NotFound
from marketplace import signing
from marketplace.models import Endorser, Entry, Image, PgpKey, SiteKey, SitePolicy

STATUSES = ("valid", "expired", "deprecated", "revoked", "all")
LOCATIONS = ("web", "none", "all")
ORDERINGS = {
    "updated": ("updated", "id"),
    "-updated": ("-updated", "-id"),
    "title": ("title", "id"),
    "-title": ("-title", "-id"),
    "identifier": ("identifier",),
    "-identifier": ("-identifier",),
    "bytes": ("bytes", "id"),
    "-bytes": ("-bytes", "-id"),
}
DEFAULT_ORDERING = "-updated"
# Searches the planner expects to find more images than this, or whose exact count it expects to cost more than
# this (its cost units: about an index-only scan of 20,000 entries), report its estimate, not an exact count.
EXACT_COUNT_UP_TO = 10_000
EXACT_COUNT_COST_UP_TO = 5_000.0
# A search shows its first 10,000 images at most (as search engines do): a deeper page costs gathering and sorting
# every match (seconds at a million entries, for any stranger who asks), and a narrower search finds it instead.
SEARCH_WINDOW = 10_000
_FINGERPRINT = re.compile(r"^[0-9A-Fa-f]{40}$")
# Columns a listing never needs: the signed bytes and the long tail of the document.
_HEAVY = ("raw", "details", "search_text", "description")


class SearchTooDeep(ApplicationError):
    """A search page past :data:`SEARCH_WINDOW`."""

    default_code = "search-too-deep"


# --- Status (DESIGN §2.3) ---------------------------------------------------------------------------


def entry_status(entry: Entry, *, now: dt.datetime | None = None) -> str:
    """``valid``, ``expired``, ``deprecated``, or ``revoked`` once the signing key is revoked (which
    marks the entry and stops it counting, whatever it says)."""
    now = now or timezone.now()
    if key_revoked(entry, now=now):
        return Entry.Status.REVOKED
    return entry_document_status(entry, now=now)


def key_revoked(entry: Entry, *, now: dt.datetime) -> bool:
    """Whether the key that signed ``entry`` is revoked at ``now`` (site-key entries have no such key)."""
    key = entry.key
    return key is not None and key.revoked_at is not None and key.revoked_at <= now


def entry_document_status(entry: Entry, *, now: dt.datetime) -> str:
    """What the entry itself says at ``now``, whoever signed it: ``valid``, ``expired`` or ``deprecated``."""
    if entry.deprecated:
        return Entry.Status.DEPRECATED
    if entry.valid_until is not None and entry.valid_until <= now:
        return Entry.Status.EXPIRED
    return Entry.Status.VALID


# Up to this many revoked keys are written into a status filter as their ids; more are asked of a subquery.
REVOKED_KEYS_LISTED_UP_TO = 500


def revoked_keys(*, now: dt.datetime) -> list[int] | QuerySet[PgpKey, Any]:
    """The keys revoked at ``now``: their ids (one small query; revoked keys are few), or, should there be more
    than :data:`REVOKED_KEYS_LISTED_UP_TO`, a subquery of them.

    Ids as values rather than a subquery matter to PostgreSQL's planner: it charges a subquery's cost to every
    probe of a nested loop, and so would rather read every matching entry and sort than walk a page's images in
    order and stop after one page."""
    keys = PgpKey.objects.filter(revoked_at__lte=now).order_by("pk").values_list("pk", flat=True)
    listed = list(keys[: REVOKED_KEYS_LISTED_UP_TO + 1])
    return (
        listed if len(listed) <= REVOKED_KEYS_LISTED_UP_TO else PgpKey.objects.filter(revoked_at__lte=now).values("pk")
    )


def status_q(status: str, *, now: dt.datetime, revoked: list[int] | QuerySet[PgpKey, Any] | None = None) -> Q:
    """The entries of one status, by the same rules as ``entry_status``, in SQL.

    Revocation is asked of the few revoked keys, not joined row by row, so that the search indexes, which carry
    ``key``, answer status filters without visiting the entries: ``revoked`` from :func:`revoked_keys` (ids read
    beforehand, what searches that walk a page want), by default a subquery."""
    revoked_ids = PgpKey.objects.filter(revoked_at__lte=now).values("pk") if revoked is None else revoked
    is_revoked = Q(key__in=revoked_ids)
    not_revoked = Q(key__isnull=True) | ~Q(key__in=revoked_ids)
    if status == Entry.Status.REVOKED:
        return is_revoked
    if status == Entry.Status.DEPRECATED:
        return not_revoked & Q(deprecated=True)
    if status == Entry.Status.EXPIRED:
        return not_revoked & Q(deprecated=False, valid_until__lte=now)
    if status == Entry.Status.VALID:
        return not_revoked & Q(deprecated=False) & (Q(valid_until__isnull=True) | Q(valid_until__gt=now))
    raise ValueError(f"unknown status {status!r}")


def status_case(*, now: dt.datetime) -> Case:
    """An entry's status now (``entry_status``) as an SQL expression, for rendering lists without Python per row."""
    return Case(
        When(key__revoked_at__lte=now, then=Value(Entry.Status.REVOKED.value)),
        When(deprecated=True, then=Value(Entry.Status.DEPRECATED.value)),
        When(valid_until__lte=now, then=Value(Entry.Status.EXPIRED.value)),
        default=Value(Entry.Status.VALID.value),
        output_field=CharField(),
    )


def _latest_entries() -> QuerySet[Entry]:
    return Entry.objects.filter(is_latest=True).select_related("endorser", "key").defer(*_HEAVY)


def _with_latest_entries(images: QuerySet[Image]) -> QuerySet[Image]:
    """Prefetch each image's latest entries (one per endorser) into ``latest_entries``."""
    return images.prefetch_related(
        Prefetch("entries", queryset=_latest_entries().order_by("endorser__email"), to_attr="latest_entries")
    )


# --- Keys --------------------------------------------------------------------------------------------


def pgp_key_list(*, actor: Any) -> QuerySet[PgpKey]:
    """The actor's own keys, newest first."""
    if not getattr(actor, "is_authenticated", False):
        return PgpKey.objects.none()
    return PgpKey.objects.filter(owner=actor).select_related("owner").order_by("-registered", "-id")


def pgp_key_get(*, actor: Any, fingerprint: str) -> PgpKey:
    """One key the actor may manage (their own; staff: any). Missing and forbidden look the same."""
    if getattr(actor, "is_authenticated", False):
        keys = PgpKey.objects.all() if actor.is_staff else PgpKey.objects.filter(owner=actor)
        key = keys.select_related("owner").filter(fingerprint=fingerprint.strip().upper()).first()
        if key is not None:
            return key
    raise NotFound(f"No OpenPGP key {fingerprint}.")


def pgp_key_endorsing_uids(key: PgpKey) -> list[str]:
    """The key's user IDs that may endorse: those carrying its owner's e-mail (DESIGN §2.2); the others give
    no right to endorse as their address."""
    owner_email = (key.owner.email or "").strip().lower()
    return [uid for uid in key.uids if owner_email and signing.uid_email(uid) == owner_email]


def signing_key_facts(fingerprint: str) -> signing.KeyInfo | None:
    """A registered account key's user IDs, creation and expiry as recorded at registration, for verifying
    signatures without asking gpg again (``signing.register_key_facts``). The site key is left to its keyring
    (its entries are few; the keyring knows whether it was given an expiry)."""
    key = PgpKey.objects.filter(fingerprint=fingerprint.upper()).only("uids", "emails", "created", "expires").first()
    if key is None:
        return None
    return signing.KeyInfo(
        fingerprint=fingerprint.upper(),
        uids=tuple(key.uids),
        emails=tuple(key.emails),
        created=key.created,
        expires=key.expires,
        armored="",
    )


# --- Who holds an e-mail (registered with accounts.emails in MarketplaceConfig.ready) ----------------------


def site_emails() -> frozenset[str]:
    """The site's e-mails: the configured one and every recorded site key's. They are nobody's."""
    configured = (getattr(settings, "MARKETPLACE_SITE_KEY_EMAIL", "") or "").strip().lower()
    recorded = {e.strip().lower() for e in SiteKey.objects.values_list("email", flat=True)}
    return frozenset({configured, *recorded} - {""})


def email_claim(email: str, user: Any) -> str | None:
    """The Marketplace's objection to giving ``email`` to ``user`` (None: an applicant), or None.

    The site's e-mail belongs to no account; an endorser e-mail belongs to the account of its first entry
    (or to the site), so that no one else can take over its timelines by holding the address."""
    address = (email or "").strip().lower()
    if not address:
        return None
    if address in site_emails():
        return "this address is the Marketplace site key's e-mail and cannot belong to an account"
    endorser = Endorser.objects.filter(email=address).only("account_id").first()
    if endorser is None:
        return None
    if endorser.account_id is None or endorser.account_id != getattr(user, "pk", None):
        return "this address endorses Marketplace images for another holder and cannot be given to this account"
    return None


# --- Images --------------------------------------------------------------------------------------------


def image_list() -> QuerySet[Image]:
    """Every image, the base that ``image_search`` narrows."""
    return Image.objects.all()


@dataclass(frozen=True)
class SearchCriteria:
    """The image search's filters (DESIGN §6), all of which must hold for the same endorser's latest entry."""

    q: str = ""
    os: str = ""
    os_version: str = ""
    arch: str = ""
    kind: str = ""
    endorser: str = ""
    status: str = "valid"
    location: str = "all"


def image_search_entries(criteria: SearchCriteria, *, now: dt.datetime) -> QuerySet[Entry]:
    """The latest entries matching every filter: an image is found when one of them is its.

    ``os``, ``os_version`` and ``arch`` match whole values, ignoring case; ``q`` looks for a phrase in
    titles and descriptions; ``endorser`` is an e-mail or a key fingerprint; ``status`` (default
    ``valid``) is the entry's status now."""
    entries = Entry.objects.filter(is_latest=True)
    if criteria.q.strip():
        entries = entries.filter(search_text__contains=criteria.q.strip().lower())
    if criteria.os:
        entries = entries.alias(os_l=Lower("os")).filter(os_l=criteria.os.strip().lower())
    if criteria.os_version:
        entries = entries.alias(os_version_l=Lower("os_version")).filter(
            os_version_l=criteria.os_version.strip().lower()
        )
    if criteria.arch:
        entries = entries.alias(arch_l=Lower("arch")).filter(arch_l=criteria.arch.strip().lower())
    if criteria.kind:
        entries = entries.filter(kind=criteria.kind.strip().lower())
    if criteria.endorser:
        value = criteria.endorser.strip()
        if _FINGERPRINT.match(value):
            entries = entries.filter(fingerprint=value.upper())
        else:
            endorser_ids = Endorser.objects.filter(email=value.lower()).values("pk")
            entries = entries.filter(endorser__in=endorser_ids)
    if criteria.status != "all":
        entries = entries.filter(status_q(criteria.status, now=now, revoked=revoked_keys(now=now)))
    if criteria.location == "web":
        entries = entries.filter(has_location=True)
    elif criteria.location == "none":
        entries = entries.filter(has_location=False)
    return entries


def _images_found(entries: QuerySet[Entry], *, images: QuerySet[Image] | None, ordering: str) -> QuerySet[Image]:
    base = images if images is not None else Image.objects.all()
    found = base.filter(Exists(entries.filter(image=OuterRef("pk"))))
    return found.order_by(*ORDERINGS.get(ordering, ORDERINGS[DEFAULT_ORDERING]))


def image_search(
    *,
    images: QuerySet[Image] | None = None,
    ordering: str = DEFAULT_ORDERING,
    now: dt.datetime | None = None,
    **criteria: str,
) -> QuerySet[Image]:
    """Images with at least one latest entry (one endorser's current word) matching every filter
    (:class:`SearchCriteria`), each with its latest entries prefetched (``latest_entries``)."""
    entries = image_search_entries(SearchCriteria(**criteria), now=now or timezone.now())
    return _with_latest_entries(_images_found(entries, images=images, ordering=ordering))


@dataclass(frozen=True)
class Counted:
    """How many images a search found; ``is_estimate`` when it is the planner's estimate, not a count."""

    value: int
    is_estimate: bool


# Plan nodes above the scan that finds the matching entries, in a DISTINCT's plan.
_ABOVE_SCAN = ("Unique", "HashAggregate", "Aggregate", "Sort", "Gather", "Gather Merge", "Incremental Sort")


def planner_estimate(plan: Any) -> tuple[int, float]:
    """From ``EXPLAIN (FORMAT JSON)`` of a ``SELECT DISTINCT image_id`` over entries: (the matching entries the
    planner expects, the plan's total cost)."""
    if isinstance(plan, str | bytes):
        plan = json.loads(plan)
    top = node = plan[0]["Plan"]
    while node["Node Type"] in _ABOVE_SCAN and node.get("Plans"):
        node = node["Plans"][0]
    return int(node["Plan Rows"]), float(top["Total Cost"])


def images_count(entries: QuerySet[Entry], *, exact_up_to: int | None = None) -> Counted:
    """How many images ``entries`` (from :func:`image_search_entries`) belong to.

    Exact unless, on PostgreSQL, the planner expects more than ``exact_up_to`` images (default
    :data:`EXACT_COUNT_UP_TO`) or counting them to cost more than :data:`EXACT_COUNT_COST_UP_TO` (a phrase
    found in one description out of five is cheap to page through, not to count); then an estimate (counting
    hundreds of thousands of rows on every page is what made large searches slow, and nobody reads such a
    number to the unit). Other databases always count."""
    limit = EXACT_COUNT_UP_TO if exact_up_to is None else exact_up_to
    distinct = entries.order_by().values("image_id").distinct()
    if connection.vendor == "postgresql" and limit >= 0:
        try:
            sql, params = distinct.query.sql_with_params()
        except EmptyResultSet:  # a filter nothing can match (revoked entries while no key is revoked)
            return Counted(0, False)
        with connection.cursor() as cursor:
            expected = _expected_matches(cursor, sql, params)
            if expected.images > limit or expected.cost > EXACT_COUNT_COST_UP_TO:
                return Counted(expected.images, True)
            return _exact_count(cursor, sql, params)
    return Counted(distinct.count(), False)


def rows_count(rows: QuerySet, *, exact_up_to: int | None = None) -> Counted:
    """How many rows ``rows`` holds: counted, unless on PostgreSQL the planner expects more than ``exact_up_to``
    (default :data:`EXACT_COUNT_UP_TO`): then its estimate, from the table statistics (long console lists are
    paged without counting a hundred thousand rows on every page)."""
    limit = EXACT_COUNT_UP_TO if exact_up_to is None else exact_up_to
    if connection.vendor == "postgresql":
        try:
            sql, params = rows.order_by().values("pk").query.sql_with_params()
        except EmptyResultSet:
            return Counted(0, False)
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            expected, _cost = planner_estimate(cursor.fetchone()[0])
        if expected > limit:
            return Counted(expected, True)
    return Counted(rows.count(), False)


@dataclass(frozen=True)
class Expected:
    """What PostgreSQL's planner expects of a search: the images it finds (:func:`expected_images`), what counting
    them costs (its cost units), and the images in the Marketplace."""

    images: int
    cost: float
    total: int


def _expected_matches(cursor: Any, sql: str, params: Sequence[Any]) -> Expected:
    """The planner's expectations of ``sql``, a ``SELECT DISTINCT image_id`` over entries (two quick queries)."""
    cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
    matching, cost = planner_estimate(cursor.fetchone()[0])
    cursor.execute(EXPECTED_IMAGES_SQL)
    images, latest = cursor.fetchone()
    found = expected_images(matching, images=images, latest=latest)
    # Tables never analysed: as many images as the search finds.
    return Expected(found, cost, round(images) if images and images > 0 else found)


def _exact_count(cursor: Any, sql: str, params: Sequence[Any]) -> Counted:
    # The SQL just planned (compiled by the ORM, values as parameters), not compiled again.
    cursor.execute(f"SELECT count(*) FROM ({sql}) matching", params)  # noqa: S608
    return Counted(cursor.fetchone()[0], False)


# Walking the images in the page's order costs about this many times more per image visited than reading one
# matching image does when every match is gathered first (measured on the benchmark's data sets).
WALK_COST_PER_IMAGE = 2.5


def walk_pays(expected: Expected, *, end: int) -> bool:
    """Whether a page ending at ``end`` is found faster by walking the images in the page's order, asking each
    whether it matches (about ``end × total / matches`` visits), than by gathering every match and sorting (about
    ``matches`` reads). PostgreSQL's planner decides this badly for a selective search: it expects the matches to
    be spread evenly and visits tens of thousands of images for a page of 50."""
    matches = max(expected.images, 1)
    return WALK_COST_PER_IMAGE * end * expected.total / matches < matches


# PostgreSQL's own row counts of the images and of the latest entries (the partial index holds exactly those).
EXPECTED_IMAGES_SQL = """
    SELECT (SELECT reltuples FROM pg_class WHERE oid = 'marketplace_image'::regclass),
           (SELECT reltuples FROM pg_class WHERE oid = 'mp_entry_one_latest'::regclass)
"""


def expected_images(matching: int, *, images: float | None, latest: float | None) -> int:
    """The images ``matching`` latest entries belong to, by the Marketplace's own ratio of images to latest
    entries (an image has one latest entry per endorser): the planner's estimate of a DISTINCT is far worse
    (it guesses distinct values from a sample). Tables never analysed: the entries as they are."""
    if not images or not latest or images <= 0 or latest <= 0:
        return matching
    return min(round(matching * images / latest), round(images))


# What a search page shows of an image and of each of its latest entries: read as plain rows.
_PAGE_IMAGE_FIELDS = (
    "id",
    "identifier",
    "title",
    "description",
    "os",
    "os_version",
    "arch",
    "kind",
    "format",
    "bytes",
    "sha1",
    "checksums",
    "first_endorsed",
    "updated",
)
_PAGE_ENTRY_FIELDS = (
    "image_id",
    "subject",
    "created",
    "is_latest",
    "deprecated_reason",
    "valid_until",
    "title",
    "type",
    "os",
    "os_version",
    "arch",
    "kind",
    "format",
    "bytes",
    "has_location",
    "fingerprint",
)


@dataclass(frozen=True)
class SearchPage:
    """One page of a search: image rows, whether more follow, and the count.

    Rows are ``_PAGE_IMAGE_FIELDS`` and ``latest`` (their latest entries' rows with ``identifier``, ``endorser``,
    ``status`` and ``key_revoked``); or, when ``rendered``, none of those: ``rendered`` holds each image as the API
    renders it, as JSON text (see :class:`PageUrls`)."""

    images: list[dict[str, Any]]
    has_next: bool
    count: Counted
    rendered: list[RenderedImage] | None = None


@dataclass(frozen=True)
class RenderedImage:
    """One image of a page the database rendered: its JSON text, and whether an entry URL is missing from it."""

    json: str
    lacks_urls: bool


@dataclass(frozen=True)
class PageUrls:
    """The API's URL templates for a page the database renders: an image's with ``{identifier}``, an entry's with
    ``{identifier}``, ``{email}`` and ``{created}``. An entry whose e-mail a URL would have to quote gets no
    ``url`` from the database (None): the caller fills it."""

    image: str
    entry: str


def image_search_page(
    criteria: SearchCriteria,
    *,
    ordering: str = DEFAULT_ORDERING,
    offset: int = 0,
    limit: int = 50,
    now: dt.datetime | None = None,
    exact_count_up_to: int | None = None,
    urls: PageUrls | None = None,
) -> SearchPage:
    """One page of :func:`image_search` as rows, in three queries at most (page, count, the page's latest
    entries); statuses are worked out by the database, at one clock ``now`` for the whole page. Pages reach the
    first :data:`SEARCH_WINDOW` images (``has_next`` is false there; a page past it is refused, ``search-too-deep``).

    On PostgreSQL the page is found the way that pays (:func:`_planned_page`); given ``urls``, the database also
    renders it as the API shows it (``rendered``: page and latest entries in one query, JSON text, times in UTC), so
    that nothing is built per row in Python."""
    if offset >= SEARCH_WINDOW:
        raise SearchTooDeep(
            f"Search pages reach the first {SEARCH_WINDOW:,} images; narrow the search to see the others."
        )
    now = now or timezone.now()
    entries = image_search_entries(criteria, now=now)
    limit = min(limit, SEARCH_WINDOW - offset)
    if connection.vendor == "postgresql":
        page = _planned_page(
            entries, ordering=ordering, offset=offset, limit=limit, now=now, urls=urls, exact=exact_count_up_to
        )
    else:
        page = _listed_page(entries, ordering=ordering, offset=offset, limit=limit, now=now, exact=exact_count_up_to)
    if page.has_next and offset + limit >= SEARCH_WINDOW:
        return replace(page, has_next=False)  # the window's last page
    return page


def _listed_page(
    entries: QuerySet[Entry], *, ordering: str, offset: int, limit: int, now: dt.datetime, exact: int | None
) -> SearchPage:
    """A page as rows where the database has no planner estimate to ask (SQLite): page, count, latest entries."""
    found = _images_found(entries, images=None, ordering=ordering).values(*_PAGE_IMAGE_FIELDS)
    rows = list(found[offset : offset + limit + 1])
    has_next = len(rows) > limit
    rows = rows[:limit]
    # A first page that holds the whole answer is its own count.
    whole = offset == 0 and not has_next
    count = Counted(len(rows), False) if whole else images_count(entries, exact_up_to=exact)
    _latest_attach(rows, now=now)
    return SearchPage(rows, has_next, count)


def _latest_attach(rows: list[dict[str, Any]], *, now: dt.datetime) -> None:
    """Give each image row of a page its latest entries' rows (``latest``), by endorser e-mail, in one query."""
    by_id = {row["id"]: row for row in rows}
    for row in rows:
        row["latest"] = []
    if by_id:
        latest = (
            Entry.objects.filter(is_latest=True, image_id__in=list(by_id))
            .annotate(
                identifier=F("image__identifier"),
                endorser_email=F("endorser__email"),
                status=status_case(now=now),
                key_revoked=Case(
                    When(key__revoked_at__isnull=False, then=Value(True)),
                    default=Value(False),
                    output_field=BooleanField(),
                ),
            )
            .order_by("endorser__email")
            .values(*_PAGE_ENTRY_FIELDS, "identifier", "endorser_email", "status", "key_revoked")
        )
        for entry in latest:
            by_id[entry["image_id"]]["latest"].append(entry)


def _iso(column: str) -> str:
    """SQL writing a timestamp as the API does (DRF's ISO 8601 in UTC: ``Z``, microseconds only when not zero).
    Whole seconds, what signed documents give, take ``to_json`` (several times cheaper than ``to_char``)."""
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (
        f"CASE WHEN date_trunc('second', {column}) = {column} THEN btrim(to_json({utc})::text, '\"') || 'Z' "
        f'ELSE to_char({utc}, \'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\') END'
    )


def _url_time(column: str) -> str:
    """SQL writing a timestamp as entry URLs carry it (``YYYY-MM-DDTHH:MM:SSZ``, UTC)."""
    return f"left(btrim(to_json({column} AT TIME ZONE 'UTC')::text, '\"'), 19) || 'Z'"


# What reverse() leaves unquoted in a path segment; other e-mails get their URL from the caller.
_URL_SAFE_EMAIL = "^[A-Za-z0-9_.~!$&'()*+,;=:@-]+$"

# The page's images (the page query, {page}) rendered as ImageSerializer renders them, each with its latest
# entries as EntrySummarySerializer renders them, by endorser e-mail; in the page's order ({order}); with {count}
# (the matches counted, or NULL) and {prefix} (the matches gathered first, or nothing).
_RENDERED_PAGE_SQL = """
{prefix}SELECT json_build_object(
    'identifier', p.identifier, 'title', p.title, 'description', p.description, 'os', p.os,
    'os_version', p.os_version, 'arch', p.arch, 'kind', p.kind, 'format', p.format, 'bytes', p.bytes,
    'sha1', p.sha1, 'checksums', p.checksums, 'first_endorsed', {first_endorsed}, 'updated', {updated},
    'current_endorsements', l.current, 'endorsements', l.items, 'url', replace(%s, '{{identifier}}', p.identifier)
    )::text,
    {count},
    l.lacks_urls
FROM ({page}) p CROSS JOIN LATERAL (
    SELECT coalesce(json_agg(x.item), '[]'::json) AS items,  -- in x's order: nothing at this level reorders it
           count(*) FILTER (WHERE x.status = 'valid') AS current,
           coalesce(bool_or(x.item->>'url' IS NULL), false) AS lacks_urls
    FROM (
        SELECT s.status, json_build_object(
            'identifier', p.identifier, 'endorser', d.email, 'subject', e.subject, 'created', {created},
            'status', s.status, 'is_latest', e.is_latest, 'deprecated_reason', e.deprecated_reason,
            'valid_until', {valid_until}, 'title', e.title, 'type', e.type, 'os', e.os, 'os_version', e.os_version,
            'arch', e.arch, 'kind', e.kind, 'format', e.format, 'bytes', e.bytes, 'has_location', e.has_location,
            'fingerprint', e.fingerprint, 'key_revoked', d.revoked_at IS NOT NULL,
            'url', CASE WHEN d.email ~ %s THEN replace(replace(replace(%s, '{{identifier}}', p.identifier),
                '{{email}}', d.email), '{{created}}', {url_created}) END
        ) AS item
        FROM marketplace_entry e
        CROSS JOIN LATERAL (  -- looked up by primary key per entry (joins would read both tables per image)
            SELECT (SELECT email FROM marketplace_endorser WHERE id = e.endorser_id) AS email,
                   (SELECT revoked_at FROM marketplace_pgpkey WHERE id = e.key_id) AS revoked_at
            OFFSET 0  -- once per entry, not once per use
        ) d
        CROSS JOIN LATERAL (
            SELECT CASE WHEN d.revoked_at <= %s THEN 'revoked' WHEN e.deprecated THEN 'deprecated'
                        WHEN e.valid_until <= %s THEN 'expired' ELSE 'valid' END AS status
        ) s
        WHERE e.image_id = p.id AND e.is_latest
        ORDER BY d.email  -- sorted here, not in json_agg (PostgreSQL 15 sorts an ordered aggregate's groups slowly)
    ) x
) l
ORDER BY {order}
"""


_ENTRIES_SELECT = 'SELECT "marketplace_entry"."image_id" AS "image_id" FROM "marketplace_entry" WHERE '


def _entries_condition(entries: QuerySet[Entry]) -> tuple[str, Sequence[Any]]:
    """The WHERE condition of a search's entries (:func:`image_search_entries`), compiled once by the ORM, with its
    parameters: what both ways of finding a page and the count ask of the latest entries."""
    sql, params = entries.order_by().values("image_id").query.sql_with_params()
    if not sql.startswith(_ENTRIES_SELECT):
        raise AssertionError(f"unexpected search SQL: {sql[:200]}")
    return f"({sql[len(_ENTRIES_SELECT) :]})", params


def _planned_page(
    entries: QuerySet[Entry],
    *,
    ordering: str,
    offset: int,
    limit: int,
    now: dt.datetime,
    urls: PageUrls | None,
    exact: int | None,
) -> SearchPage:
    """A page on PostgreSQL: the database is asked first what it expects the search to find, then the page is found
    the way that pays (:func:`walk_pays`): by walking the images in order (asking each whether it matches), or
    from every match gathered first, which also gives the exact count in the same query. Given ``urls``, the
    database renders the page (``rendered``); otherwise the page is rows, as elsewhere."""
    exact_up_to = EXACT_COUNT_UP_TO if exact is None else exact
    try:
        condition, condition_params = _entries_condition(entries)
    except EmptyResultSet:  # a filter nothing can match (revoked entries while no key is revoked)
        return SearchPage([], False, Counted(0, False), rendered=None if urls is None else [])
    matches_sql = f'SELECT DISTINCT "marketplace_entry"."image_id" FROM "marketplace_entry" WHERE {condition}'  # noqa: S608
    matches_params = condition_params
    keys = ORDERINGS.get(ordering, ORDERINGS[DEFAULT_ORDERING])
    order = ", ".join(f"p.{key[1:]} DESC" if key.startswith("-") else f"p.{key}" for key in keys)
    columns = ", ".join(f"i.{name}" for name in _PAGE_IMAGE_FIELDS)
    window = f"ORDER BY {order.replace('p.', 'i.')} LIMIT {int(limit) + 1} OFFSET {int(offset)}"
    with connection.cursor() as cursor:
        expected = _expected_matches(cursor, matches_sql, matches_params)
        gathered = not walk_pays(expected, end=offset + limit + 1)
        if gathered:
            page_sql = (
                f"SELECT {columns} FROM marketplace_image i "  # noqa: S608
                f"WHERE i.id IN (SELECT image_id FROM matching) {window}"
            )
            page_params: Sequence[Any] = ()
        else:  # each image in the page's order asked whether one of its latest entries matches
            page_sql = (
                f"SELECT {columns} FROM marketplace_image i WHERE EXISTS (SELECT 1 FROM marketplace_entry "  # noqa: S608
                f'WHERE {condition} AND "marketplace_entry"."image_id" = i.id) {window}'
            )
            page_params = condition_params
        prefix = f"WITH matching AS MATERIALIZED ({matches_sql})\n" if gathered else ""
        count_sql = "(SELECT count(*) FROM matching)" if gathered else "NULL"
        if urls is None:
            statement = f"{prefix}SELECT p.*, {count_sql} FROM ({page_sql}) p ORDER BY {order}"  # noqa: S608
            params: Sequence[Any] = (*(matches_params if gathered else ()), *page_params)
            count_column = len(_PAGE_IMAGE_FIELDS)
        else:
            statement = _RENDERED_PAGE_SQL.format(
                prefix=prefix,
                page=page_sql,
                order=order,
                count=count_sql,
                first_endorsed=_iso("p.first_endorsed"),
                updated=_iso("p.updated"),
                created=_iso("e.created"),
                valid_until=_iso("e.valid_until"),
                url_created=_url_time("e.created"),
            )
            # Parameters in the order their placeholders appear: the matches', the image URL, the page's, the entries'.
            params = (
                *(matches_params if gathered else ()),
                urls.image,
                *page_params,
                _URL_SAFE_EMAIL,
                urls.entry,
                now,
                now,
            )
            count_column = 1
        cursor.execute(statement, params)
        fetched = cursor.fetchall()
        shown = fetched[:limit]
        has_next = len(fetched) > limit
        if gathered and fetched:
            count = Counted(fetched[0][count_column], False)
        elif offset == 0 and not has_next:  # a first page that holds the whole answer is its own count
            count = Counted(len(shown), False)
        elif expected.images > exact_up_to or expected.cost > EXACT_COUNT_COST_UP_TO:
            count = Counted(expected.images, True)
        else:
            count = _exact_count(cursor, matches_sql, matches_params)
    if urls is not None:
        return SearchPage([], has_next, count, rendered=[RenderedImage(row[0], row[2]) for row in shown])
    rows = [dict(zip(_PAGE_IMAGE_FIELDS, row[:count_column], strict=True)) for row in shown]
    _latest_attach(rows, now=now)
    return SearchPage(rows, has_next, count)


def image_get(*, identifier: str) -> Image:
    """One image with every endorser's latest entry (``latest_entries``) and its SHA-256 claim (what the policy
    needs, in the same query)."""
    image = _with_latest_entries(with_sha256_claims(Image.objects.filter(identifier=identifier))).first()
    if image is None:
        raise NotFound(f"No image {identifier} in the Marketplace.")
    return image


def current_endorsements(image: Image, *, now: dt.datetime | None = None) -> list[Entry]:
    """The image's valid latest entries whose key is not revoked (from ``image_get``/``image_search``)."""
    now = now or timezone.now()
    return [e for e in image.latest_entries if entry_status(e, now=now) == Entry.Status.VALID]  # type: ignore[attr-defined]


# What an image is shown with: one endorsement's claims, never a mix, never simply the newest entry's.
DISPLAY_FIELDS = ("title", "description", "os", "os_version", "arch", "kind", "format")
# The claims compared when an image page marks other endorsers' differing claims (description is left out:
# listings do not load it).
CLAIM_FIELDS = ("title", "os", "os_version", "arch", "kind", "format")


def image_display_choice(
    entries: Sequence[Entry], *, timeline_starts: Mapping[int, int], now: dt.datetime
) -> Entry | None:
    """Of an image's latest entries, the most trusted one, whose claims the image is shown with: the site's
    current endorsement, else the current endorsement whose timeline for the image started first, else (none
    current) the latest entry of the timeline that started first.

    ``timeline_starts``: endorser id → id of that endorser's first entry for the image. Timelines are ordered
    by when the Marketplace stored them, not by the signers' ``created`` dates, which a signer may backdate."""
    if not entries:
        return None
    ordered = sorted(entries, key=lambda e: (timeline_starts.get(e.endorser_id, e.pk), e.pk))
    current = [e for e in ordered if entry_status(e, now=now) == Entry.Status.VALID]
    site = [e for e in current if e.key_id is None]  # only site-key entries are stored without a registered key
    return (site or current or ordered)[0]


def image_display_entry(*, image: Image, now: dt.datetime | None = None) -> Entry | None:
    """The entry :func:`image_display_choice` picks for ``image`` now (two queries)."""
    entries = list(
        Entry.objects.filter(image=image, is_latest=True)
        .select_related("key")
        .defer("raw", "details", "search_text")
        .order_by("pk")
    )
    starts = dict(
        Entry.objects.filter(image=image)
        .order_by()
        .values("endorser_id")
        .annotate(first=Min("pk"))
        .values_list("endorser_id", "first")
    )
    return image_display_choice(entries, timeline_starts=starts, now=now or timezone.now())


def images_latest_signed_by(*, key: PgpKey) -> list[int]:
    """Ids of the images one of whose latest entries ``key`` signed (whose display a revocation may change)."""
    return list(Entry.objects.filter(key=key, is_latest=True).order_by("image_id").values_list("image_id", flat=True))


def image_display_source(*, image: Image) -> Entry:
    """The entry the image is shown with, with its signed bytes (what a new site entry is built from)."""
    shown = image_display_entry(image=image)
    if shown is None:  # an image exists only through its entries
        raise NotFound(f"No entry for the image {image.identifier}.")
    return Entry.objects.get(pk=shown.pk)


def image_show(image: Image, *, now: dt.datetime | None = None) -> Entry | None:
    """Set ``image``'s display attributes (in memory) to the claims of :func:`image_display_entry` now and
    return that entry: detail pages show the choice as it is at this moment (an endorsement may have expired
    since the cached columns were written), lists show the cached columns."""
    entry = image_display_entry(image=image, now=now)
    if entry is not None:
        for name in DISPLAY_FIELDS:
            setattr(image, name, getattr(entry, name))
    return entry


def image_claims_differing(image: Image) -> list[tuple[Entry, list[tuple[str, str]]]]:
    """Each latest entry (from ``image_get``) whose claims differ from what the image is shown with, and how:
    (entry, [(field, its value), …]), so that pages can say whose claims they are."""
    differing = []
    for entry in image.latest_entries:  # type: ignore[attr-defined]
        fields = [(name, getattr(entry, name)) for name in CLAIM_FIELDS if getattr(entry, name) != getattr(image, name)]
        if fields:
            differing.append((entry, fields))
    return differing


# --- Entries ----------------------------------------------------------------------------------------------


def parse_created(value: str) -> dt.datetime:
    """The ``created`` part of an entry's URL (``YYYY-MM-DDTHH:MM:SSZ``); anything else is not found."""
    try:
        created = dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise NotFound(f"No entry created {value!r}: times look like 2025-01-31T12:00:00Z.") from None
    return created


def entry_get(*, identifier: str, email: str, created: dt.datetime) -> Entry:
    """One entry by its key (identifier, endorser e-mail, created)."""
    entry = (
        Entry.objects.select_related("image", "endorser", "key")
        .filter(image__identifier=identifier, endorser__email=email.lower(), created=created)
        .first()
    )
    if entry is None:
        raise NotFound(f"No entry for {identifier} by {email} created {created:%Y-%m-%dT%H:%M:%SZ}.")
    return entry


def entries_in_stored_order() -> QuerySet[Entry]:
    """Every entry in the order the Marketplace stored them (each timeline oldest first), with the signed bytes:
    what another Marketplace replicates."""
    return Entry.objects.select_related("image", "endorser", "key").defer("details", "search_text").order_by("id")


def entry_timeline(*, entry: Entry) -> QuerySet[Entry]:
    """Every entry of the same (image, endorser), newest first."""
    return (
        Entry.objects.filter(image_id=entry.image_id, endorser_id=entry.endorser_id)
        .select_related("image", "endorser", "key")
        .defer(*_HEAVY)
        .order_by("-created")
    )


# --- Endorsers ------------------------------------------------------------------------------------------


def _count_latest(condition: Q) -> Coalesce:
    """A per-endorser count of latest entries under ``condition``, as a correlated subquery, so that it is
    computed for the rows of one page only (through the ``mp_latest_endorser`` index)."""
    counted = (
        Entry.objects.filter(condition, endorser=OuterRef("pk"), is_latest=True)
        .order_by()
        .values("endorser")
        .annotate(n=Count("endorser"))  # not the primary key: the index alone answers (an index-only scan)
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def endorser_list(*, q: str = "", now: dt.datetime | None = None) -> QuerySet[Endorser]:
    """Endorsers by e-mail, with ``image_count`` (images they endorse or did) and ``current_count``
    (their current endorsements)."""
    now = now or timezone.now()
    endorsers = Endorser.objects.all()
    if q.strip():
        value = q.strip().lower()
        endorsers = endorsers.filter(Q(email__contains=value) | Q(subject__icontains=value))
    return endorsers.annotate(
        image_count=_count_latest(Q()), current_count=_count_latest(status_q("valid", now=now))
    ).order_by("email")


def endorser_get(*, email: str) -> Endorser:
    endorser = endorser_list().filter(email=email.strip().lower()).first()
    if endorser is None:
        raise NotFound(f"No endorser {email} in the Marketplace.")
    return endorser


def endorser_history(*, endorser: Endorser, identifier: str = "") -> QuerySet[Entry]:
    """Every entry the endorser signed, newest first; ``identifier`` narrows it to one image."""
    entries = Entry.objects.filter(endorser=endorser)
    if identifier:
        entries = entries.filter(image__identifier=identifier)
    return entries.select_related("image", "endorser", "key").defer(*_HEAVY).order_by("-created", "-id")


# --- Site key and site policy -----------------------------------------------------------------------------


def site_key_get() -> SiteKey | None:
    """The site's current key (the newest made by ``create_site_key``), or None before there is one."""
    return SiteKey.objects.order_by("-registered", "-id").first()


def site_key_fingerprints() -> frozenset[str]:
    """Every key the site has signed with: their entries are the site's, and ``site`` in a policy means them."""
    return frozenset(SiteKey.objects.values_list("fingerprint", flat=True))


def policy_active() -> SitePolicy | None:
    """The active policy's row, or None while the site has never set one (the default rules apply)."""
    return SitePolicy.objects.filter(is_active=True).select_related("created_by").first()


def policy_history(*, limit: int = 50) -> QuerySet[SitePolicy]:
    """The policy's versions, newest first."""
    return SitePolicy.objects.select_related("created_by").order_by("-created", "-id")[:limit]


def images_for_evaluation() -> QuerySet[Image]:
    """Every image with its latest entries prefetched, in a stable order, for evaluating them all."""
    return _with_latest_entries(with_sha256_claims(Image.objects.order_by("identifier")))


def _sha256_first_claim() -> Subquery:
    earlier = Image.objects.filter(sha256=OuterRef("sha256"), pk__lt=OuterRef("pk")).exclude(sha256="")
    return Subquery(earlier.order_by("pk").values("identifier")[:1])


def with_sha256_claims(images: QuerySet[Image]) -> QuerySet[Image]:
    """``images`` annotated with ``sha256_first_claim``: see :func:`image_sha256_claimed_first_by`."""
    return images.annotate(sha256_first_claim=_sha256_first_claim())


def image_sha256_claimed_first_by(image: Image) -> str | None:
    """The identifier of another image that claimed ``image``'s SHA-256 before it did (lower id), if any.

    At most one of two images claiming one SHA-256 tells the truth; the claim vouches for the first only, so
    that an image uploaded later can neither borrow a trusted checksum nor keep the genuine one from being
    published. Uses the ``with_sha256_claims`` annotation when present, else one query."""
    if not image.sha256:
        return None
    if hasattr(image, "sha256_first_claim"):
        return image.sha256_first_claim
    earlier = Image.objects.filter(sha256=image.sha256, pk__lt=image.pk).order_by("pk")
    return earlier.values_list("identifier", flat=True).first()


def image_newest_entry(*, image: Image) -> Entry:
    """The newest entry any endorser made for the image (what a new site entry is built from)."""
    entry = Entry.objects.filter(image=image).select_related("endorser", "key").order_by("-created", "-id").first()
    if entry is None:  # an image exists only through its entries
        raise NotFound(f"No entry for the image {image.identifier}.")
    return entry


def image_timelines(*, image: Image) -> list[tuple[Endorser, list[Entry]]]:
    """Every endorser's whole timeline for the image, endorsers by e-mail, entries newest first."""
    entries = (
        Entry.objects.filter(image=image)
        .select_related("image", "endorser", "key")
        .defer(*_HEAVY)
        .order_by("endorser__email", "-created")
    )
    timelines: dict[int, tuple[Endorser, list[Entry]]] = {}
    for entry in entries:
        timelines.setdefault(entry.endorser_id, (entry.endorser, []))[1].append(entry)
    return list(timelines.values())


def entries_expiring(*, now: dt.datetime, within: dt.timedelta) -> QuerySet[Entry]:
    """Current (latest, valid) entries that expire within ``within`` of ``now`` and whose endorser was not told."""
    return (
        Entry.objects.filter(
            status_q(Entry.Status.VALID, now=now),
            is_latest=True,
            valid_until__isnull=False,
            valid_until__lte=now + within,
            notified_expiry__isnull=True,
        )
        .select_related("image", "endorser")
        .defer(*_HEAVY)
        .order_by("endorser__email", "valid_until", "id")
    )


# --- Rows stored before the endorser-identity rule (DESIGN §2.2) -------------------------------------------


@dataclass(frozen=True)
class IdentityProblem:
    """One group of stored rows that breaks who-may-endorse-as-whom; reported, never changed silently."""

    kind: str  # "email-not-owner" | "endorser-several-accounts" | "site-key-registered"
    message: str


def identity_problems(*, apps: Any = None) -> list[IdentityProblem]:
    """Entries whose endorser e-mail is not their key owner's (or not the site's, for the site key), endorsers
    whose entries come from the keys of more than one holder, and account keys carrying a site key's
    fingerprint. ``apps``: a migration's app registry (historical models); by default the real ones."""
    entries, endorsers, keys, site_keys = (
        (apps.get_model("marketplace", name) for name in ("Entry", "Endorser", "PgpKey", "SiteKey"))
        if apps is not None
        else (Entry, Endorser, PgpKey, SiteKey)
    )
    problems: list[IdentityProblem] = []
    mismatched = (
        entries.objects.filter(key__isnull=False)
        .alias(owner_email=Lower("key__owner__email"))
        .exclude(endorser__email=F("owner_email"))
        .values("endorser__email", "key__fingerprint", "key__owner__username", "key__owner__email")
        .annotate(n=Count("id"))
        .order_by("endorser__email", "key__fingerprint")
    )
    for row in mismatched:
        problems.append(
            IdentityProblem(
                "email-not-owner",
                f"{row['n']} entr{'y' if row['n'] == 1 else 'ies'} of endorser {row['endorser__email']} signed with "
                f"the key {row['key__fingerprint']} of account {row['key__owner__username']} "
                f"({row['key__owner__email'] or 'no e-mail'}): not the e-mail of the key's owner.",
            )
        )
    site = {
        fingerprint: email.strip().lower()
        for fingerprint, email in site_keys.objects.values_list("fingerprint", "email")
    }
    for fingerprint, site_email in sorted(site.items()):
        wrong = (
            entries.objects.filter(key__isnull=True, fingerprint=fingerprint)
            .exclude(endorser__email=site_email)
            .values("endorser__email")
            .annotate(n=Count("id"))
            .order_by("endorser__email")
        )
        for row in wrong:
            problems.append(
                IdentityProblem(
                    "email-not-owner",
                    f"{row['n']} entr{'y' if row['n'] == 1 else 'ies'} of endorser {row['endorser__email']} signed "
                    f"with the site key {fingerprint}: not the site e-mail ({site_email}).",
                )
            )
    several = (
        endorsers.objects.annotate(
            owners=Count("entries__key__owner", distinct=True),
            by_site=Exists(entries.objects.filter(endorser=OuterRef("pk"), key__isnull=True)),
        )
        .filter(Q(owners__gt=1) | Q(owners__gte=1, by_site=True))
        .order_by("email")
    )
    for endorser in several:
        owners = sorted(
            entries.objects.filter(endorser=endorser, key__isnull=False)
            .values_list("key__owner__username", flat=True)
            .distinct()
        )
        holders = ", ".join(owners + (["the site"] if endorser.by_site else []))
        problems.append(
            IdentityProblem(
                "endorser-several-accounts",
                f"Endorser {endorser.email} has entries from the keys of several holders ({holders}); "
                "it belongs to none of them until an administrator decides.",
            )
        )
    for key in keys.objects.filter(fingerprint__in=list(site)).order_by("fingerprint"):
        problems.append(
            IdentityProblem(
                "site-key-registered",
                f"The site key {key.fingerprint} is registered as an account's key (account id {key.owner_id}, key "
                f"row {key.pk}); only the site may hold it.",
            )
        )
    return problems
