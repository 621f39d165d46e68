"""Marketplace data: registered OpenPGP keys, endorsers, images and their immutable signed entries.

Entries are never changed or deleted (DESIGN §2.3). What listings filter on is copied out of the XML
into indexed columns at upload; the original signed bytes are kept in ``raw`` and served back as they
came. Each (image, endorser) timeline has exactly one entry flagged ``is_latest``; the flag is moved
by ``services.entry_upload`` under the endorser's row lock, and a partial unique constraint backs it.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower


class PgpKey(models.Model):
    """An OpenPGP public key registered to an account, trusted for verifying that account's entries."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="pgp_keys")
    fingerprint = models.CharField(max_length=40, unique=True)
    uids = models.JSONField(default=list)
    emails = models.JSONField(default=list)
    armored = models.TextField()
    created = models.DateTimeField(help_text="When the key itself was made (from the key).")
    expires = models.DateTimeField(null=True, blank=True)
    registered = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-registered", "-id"]
        verbose_name = "OpenPGP key"

    def __str__(self) -> str:
        return self.fingerprint

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class Endorser(models.Model):
    """Everyone who has signed at least one entry, by e-mail. Its row is the lock of its timelines.

    An endorser e-mail belongs to exactly one holder, fixed by its first entry: the account whose key signed
    it, the certificate subject of a legacy XML-DSig entry or a HEPiX image list, or the site (neither) for the site
    key's entries (DESIGN §2.2)."""

    email = models.CharField(max_length=254, unique=True)
    account = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="endorsers",
        help_text="The account whose keys endorse as this e-mail; empty: the site.",
    )
    certificate_subject = models.CharField(
        max_length=500,
        blank=True,
        help_text="For legacy X.509 (XML-DSig) endorsers: the certificate subject DN whose entries this e-mail "
        "takes. Empty for accounts' keys and the site key.",
    )
    subject = models.CharField(max_length=500, blank=True, help_text="The user ID of the newest entry.")
    first_endorsed = models.DateTimeField()
    last_endorsed = models.DateTimeField(db_index=True)
    entry_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email


class Image(models.Model):
    """One image, named by its identifier (DESIGN §2.1).

    What the content is, is fixed: the identifier fixes the SHA-1, and the first accepted entry fixes
    ``bytes`` and every other checksum it gives (an algorithm no entry gave yet is fixed by the first
    that does); ``services.entry_upload`` refuses entries that disagree. Two images may claim one SHA-256
    (at most one of them tells the truth): the claim counts for the image that made it first (the lowest id),
    so a latecomer can neither borrow a trusted checksum nor block the genuine image from being published
    (``selectors.image_sha256_claimed_first_by``). The descriptive columns are a cache
    of the most trusted current endorsement's claims (``services.image_display_refresh``), for display
    and ordering; filters look at the latest entries."""

    identifier = models.CharField(max_length=27, unique=True)
    sha1 = models.CharField(max_length=40)
    bytes = models.BigIntegerField(db_index=True)
    checksums = models.JSONField(default=dict, help_text="Fixed checksums: algorithm → lower-case hex.")
    sha256 = models.CharField(max_length=64, blank=True, help_text="The fixed SHA-256, for checksum rules.")
    title = models.CharField(max_length=500, blank=True)
    description = models.TextField(blank=True)
    os = models.CharField(max_length=200, blank=True)
    os_version = models.CharField(max_length=200, blank=True)
    arch = models.CharField(max_length=50, blank=True)
    kind = models.CharField(max_length=20, blank=True)
    format = models.CharField(max_length=50, blank=True)
    first_endorsed = models.DateTimeField()
    updated = models.DateTimeField(db_index=True, help_text="Created time of the newest entry.")

    class Verdict(models.TextChoices):
        NOT_EVALUATED = "", "not evaluated yet"
        ALLOWED = "allowed", "allowed, every rule passed"
        WARNINGS = "warnings", "allowed despite failed rules"
        DENIED = "denied", "denied"

    # The active policy's verdict, kept by policy.verdicts (the console filters on it): written when an entry
    # arrives or a key is revoked, for every image when the policy changes (a task), and by a periodic task when
    # ``verdict_until`` passes. Readers trust it only while ``verdict_policy`` is the active policy's id (0: the
    # default rules) and ``verdict_until`` has not passed; otherwise they evaluate the image themselves.
    verdict = models.CharField(max_length=10, choices=Verdict.choices, blank=True, default="", db_default="")
    verdict_policy = models.IntegerField(
        default=-1, db_default=-1, help_text="The SitePolicy id the verdict was reached under (0: default rules)."
    )
    verdict_until = models.DateTimeField(
        null=True, blank=True, help_text="When the verdict may change with the clock: a current endorsement expires."
    )

    class Meta:
        ordering = ["-updated", "-id"]
        indexes = [
            # The console's verdict filters: the kept verdict under one policy, by identifier, answered (and
            # counted) from the index alone.
            models.Index(
                fields=["verdict", "verdict_policy", "identifier"], include=["verdict_until"], name="mp_image_verdict"
            ),
            models.Index(fields=["verdict_policy"], name="mp_image_verdict_policy"),
            models.Index(fields=["verdict_until"], name="mp_image_verdict_until"),
            models.Index(fields=["-updated", "-id"], name="mp_image_updated"),
            models.Index(fields=["title", "id"], name="mp_image_title"),
            # Which image claimed a SHA-256 first (checksum rules).
            models.Index(fields=["sha256", "id"], condition=~Q(sha256=""), name="mp_image_sha256"),
        ]

    def __str__(self) -> str:
        return self.identifier


# What an entry's status depends on (besides the key's revocation): carried in the search indexes.
STATUS_COLUMNS = ["deprecated", "valid_until", "key", "has_location"]
# The claims searches filter on, carried in the filter indexes so that any combination is answered from one.
CLAIM_COLUMNS = ["os", "os_version", "arch", "kind"]


class Entry(models.Model):
    """One signed metadata document, immutable, keyed by (identifier, endorser e-mail, endorsement created)."""

    class Status(models.TextChoices):
        VALID = "valid"
        EXPIRED = "expired"
        DEPRECATED = "deprecated"
        REVOKED = "revoked"

    image = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="entries")
    endorser = models.ForeignKey(Endorser, on_delete=models.PROTECT, related_name="entries")
    created = models.DateTimeField(help_text="dcterms:created of the endorsement (UTC).")
    subject = models.CharField(max_length=500)
    issuer = models.CharField(max_length=500)
    fingerprint = models.CharField(max_length=40, db_index=True)
    # Null for entries signed with the site key, which is not registered to an account.
    key = models.ForeignKey(PgpKey, null=True, blank=True, on_delete=models.PROTECT, related_name="entries")
    raw = models.BinaryField(help_text="The signed document exactly as uploaded.")
    uploaded = models.DateTimeField(auto_now_add=True)
    uploader = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    is_latest = models.BooleanField(default=False)

    # Copied from the document for filtering and listing.
    valid_until = models.DateTimeField(null=True, blank=True, help_text="dcterms:valid: expiry.")
    deprecated = models.BooleanField(default=False)
    deprecated_reason = models.TextField(blank=True)
    title = models.CharField(max_length=500, blank=True)
    description = models.TextField(blank=True)
    search_text = models.TextField(blank=True, help_text="Lower-case title and description, for q.")
    type = models.CharField(max_length=100)
    os = models.CharField(max_length=200, blank=True)
    os_version = models.CharField(max_length=200, blank=True)
    arch = models.CharField(max_length=50, blank=True)
    kind = models.CharField(max_length=20, blank=True)
    format = models.CharField(max_length=50, blank=True)
    compression = models.CharField(max_length=10, blank=True)
    has_location = models.BooleanField(default=False)
    locations = models.JSONField(default=list)
    bytes = models.BigIntegerField()
    sha1 = models.CharField(max_length=40, db_index=True)
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    # Everything else the document says (checksums, creator, version, ports, …), for the detail view.
    details = models.JSONField(default=dict)
    # Bookkeeping, not part of the signed entry: when its endorser was told that it expires soon.
    notified_expiry = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "entries"
        constraints = [
            models.UniqueConstraint(fields=["image", "endorser", "created"], name="mp_entry_key"),
            models.UniqueConstraint(
                fields=["image", "endorser"],
                condition=Q(is_latest=True),
                include=STATUS_COLUMNS,
                name="mp_entry_one_latest",
            ),
        ]
        # The search filters, over latest entries only (what the image search looks at). On PostgreSQL
        # each carries the status columns, so that filtering by status needs no visit to the wide rows.
        # PostgreSQL also gets a trigram index for ``q`` (mp_latest_search_trgm, migration 0001) and extended
        # statistics on the claims searches combine (mp_entry_claims, 0005).
        indexes = [
            # One endorser's history, newest first.
            models.Index(fields=["endorser", "-created"], name="mp_entry_history"),
            # Every filtered claim is carried, the raw columns of the expressions too: PostgreSQL answers from
            # the index alone only when every column the query names is in it, lower(os) not counting as os.
            models.Index(
                Lower("os"),
                Lower("os_version"),
                name="mp_latest_os",
                condition=Q(is_latest=True),
                include=["image", *CLAIM_COLUMNS, *STATUS_COLUMNS],
            ),
            models.Index(
                Lower("arch"),
                "kind",
                name="mp_latest_arch_kind",
                condition=Q(is_latest=True),
                include=["image", *CLAIM_COLUMNS, *STATUS_COLUMNS],
            ),
            # An image's latest entries with every filtered claim: a search walking images in the page's order
            # asks it whether each has a matching entry without visiting the entries.
            models.Index(
                "image",
                name="mp_latest_image_claims",
                condition=Q(is_latest=True),
                include=["endorser", "fingerprint", *CLAIM_COLUMNS, *STATUS_COLUMNS],
            ),
            models.Index(
                "kind", name="mp_latest_kind", condition=Q(is_latest=True), include=["image", *STATUS_COLUMNS]
            ),
            models.Index(
                "endorser", "image", name="mp_latest_endorser", condition=Q(is_latest=True), include=STATUS_COLUMNS
            ),
            models.Index("valid_until", name="mp_latest_valid_until", condition=Q(is_latest=True)),
            models.Index("key", name="mp_latest_key", condition=Q(is_latest=True)),
        ]

    def __str__(self) -> str:
        return f"{self.image.identifier} by {self.endorser.email} at {self.created_text}"

    @property
    def created_text(self) -> str:
        """``created`` as DESIGN §2.1 writes dates, and as entry URLs carry it."""
        return self.created.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SiteKey(models.Model):
    """The site's own OpenPGP key (``manage.py create_site_key``): its secret half lives in the site keyring,
    and entries it signs count as the site's endorsements (``site`` in policies) without an account."""

    fingerprint = models.CharField(max_length=40, unique=True)
    uid = models.CharField(max_length=500)
    email = models.CharField(max_length=254)
    armored = models.TextField(help_text="The public key, for other sites to trust.")
    created = models.DateTimeField(help_text="When the key itself was made (from the key).")
    registered = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-registered", "-id"]
        verbose_name = "site key"

    def __str__(self) -> str:
        return self.fingerprint


class SitePolicy(models.Model):
    """One version of the site policy (DESIGN §2.4). Changing the policy adds a row; exactly one is active."""

    rules = models.JSONField(help_text="The rules, by the JSON names of DESIGN §2.4.")
    created = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.TextField(blank=True)
    is_active = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "site policies"
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="mp_one_active_policy")
        ]

    def __str__(self) -> str:
        return f"policy #{self.pk}{' (active)' if self.is_active else ''}"


class TrustChange(models.Model):
    """An image whose decision under the site policy turned from allowed to denied (issue 16): an outbox row,
    written in the transaction that rewrote the image's verdict, delivered after commit to whoever listens
    (``marketplace.signals.image_trust_lost``; compute tells the owners of the VMs running from the image).
    ``delivered`` stays empty until every listener has run, so a crash between commit and delivery loses
    nothing: the periodic delivery picks the row up again."""

    class Cause(models.TextChoices):
        DEPRECATED = "deprecated", "an endorser deprecated the image"
        ENDORSEMENT = "endorsement", "a new endorsement changed the decision"
        EXPIRED = "expired", "an endorsement expired"
        KEY_REVOKED = "key-revoked", "an endorser's key was revoked"
        POLICY = "policy", "the site policy changed"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="trust_changes")
    cause = models.CharField(max_length=20, choices=Cause.choices)
    summary = models.TextField(help_text="The decision now, rule by rule, in words.")
    verdict_before = models.CharField(max_length=10)
    created = models.DateTimeField(auto_now_add=True)
    delivered = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["id"], condition=Q(delivered__isnull=True), name="mp_trust_change_undelivered")]

    def __str__(self) -> str:
        return f"{self.image_id}: {self.cause}"


class ImageListSubscription(models.Model):
    """A HEPiX image list this Marketplace follows (``manage.py subscribe_imagelist``, issue 16): where it is read
    from, what was last accepted from it, and how the last refresh went."""

    class State(models.TextChoices):
        ACTIVE = "active", "the last refresh was accepted (or found no change)"
        ERROR = "error", "the last refresh was refused; the images stay as the last accepted list left them"

    source = models.CharField(max_length=2000, unique=True, help_text="The list's http(s) URL or file path.")
    list_identifier = models.CharField(max_length=36, blank=True, help_text="The list's dc:identifier (UUID).")
    title = models.CharField(max_length=500, blank=True)
    version = models.CharField(max_length=100, blank=True, help_text="hv:version of the last accepted list.")
    list_created = models.DateTimeField(null=True, blank=True, help_text="dc:date:created of the last accepted list.")
    expires = models.DateTimeField(null=True, blank=True, help_text="dc:date:expires of the last accepted list.")
    endorser = models.ForeignKey(
        Endorser, null=True, blank=True, on_delete=models.PROTECT, related_name="imagelist_subscriptions"
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    error_code = models.CharField(max_length=50, blank=True)
    error_message = models.TextField(blank=True)
    subscribed = models.DateTimeField(auto_now_add=True)
    subscribed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_fetched = models.DateTimeField(null=True, blank=True, help_text="When the list was last read.")
    last_changed = models.DateTimeField(null=True, blank=True, help_text="When a new version was last accepted.")

    class Meta:
        ordering = ["source"]
        verbose_name = "image list subscription"

    def __str__(self) -> str:
        return self.source


class ImageListVersion(models.Model):
    """One accepted version of a subscribed list, stored as it was received (the S/MIME message), so that
    anyone can verify it again; its images became entries (``ImageListImage``)."""

    subscription = models.ForeignKey(ImageListSubscription, on_delete=models.CASCADE, related_name="versions")
    version = models.CharField(max_length=100)
    created = models.DateTimeField(help_text="dc:date:created of the list.")
    expires = models.DateTimeField(help_text="dc:date:expires of the list: the expiry of its entries.")
    raw = models.BinaryField(help_text="The signed list exactly as received.")
    signer_subject = models.CharField(max_length=500)
    signer_issuer = models.CharField(max_length=500)
    fingerprint = models.CharField(max_length=40, help_text="SHA-1 of the signing certificate.")
    received = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [models.UniqueConstraint(fields=["subscription", "created"], name="mp_imagelist_version")]

    def __str__(self) -> str:
        return f"{self.subscription.source} v{self.version}"


class ImageListImage(models.Model):
    """An image of a list version and the Marketplace entry it became; ``uuid`` is the list's name for the image
    (its ``dc:identifier``), the Marketplace's is the image's identifier (the SHA-1 of its bytes)."""

    list_version = models.ForeignKey(ImageListVersion, on_delete=models.CASCADE, related_name="images")
    uuid = models.CharField(max_length=36, db_index=True)
    image = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="imagelist_images")
    entry = models.ForeignKey(Entry, on_delete=models.PROTECT, related_name="+")
    sha512 = models.CharField(max_length=128)
    in_list = models.BooleanField(default=True, help_text="False: the image left the list and was deprecated.")

    class Meta:
        ordering = ["uuid"]
        constraints = [models.UniqueConstraint(fields=["list_version", "uuid"], name="mp_imagelist_image_uuid")]

    def __str__(self) -> str:
        return self.uuid
