"""Storage data: the image cache and volumes (DESIGN §5).

One ``CachedImage`` row per Marketplace identifier is the one cached origin of that image for every worker
process and host: whoever claims the row (``state`` ``downloading`` with its own ``claim`` token) downloads,
everyone else waits for it. ``storage.images`` holds the rules; the row holds where the copy is and what was
checked.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class CachedImage(models.Model):
    """A verified, uncompressed local copy of one Marketplace image (or the claim to make one)."""

    class State(models.TextChoices):
        DOWNLOADING = "downloading"
        READY = "ready"
        FAILED = "failed"

    identifier = models.CharField(max_length=27, unique=True)
    image = models.ForeignKey("marketplace.Image", on_delete=models.PROTECT, related_name="+")
    state = models.CharField(max_length=20, choices=State.choices, default=State.DOWNLOADING)
    # The token of the download that holds the claim; finishing is conditional on it (a takeover changes it).
    claim = models.UUIDField(null=True, blank=True)
    claimed_at = models.DateTimeField(help_text="When the current (or last) download was claimed.")
    finished_at = models.DateTimeField(null=True, blank=True)
    path = models.CharField(max_length=1000, blank=True, help_text="The uncompressed image file (when ready).")
    bytes = models.BigIntegerField(null=True, blank=True, help_text="Size checked against the image's fixed size.")
    sha1 = models.CharField(max_length=40, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    # Where the bytes came from: the trusted endorsement whose location served them.
    entry = models.ForeignKey("marketplace.Entry", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    location = models.TextField(blank=True)
    message = models.TextField(blank=True, help_text="Why the last download failed: each location and its check.")
    failure_transient = models.BooleanField(default=False, help_text="Whether trying again later may help.")

    class Meta:
        ordering = ["identifier"]
        verbose_name = "cached image"
        constraints = [
            models.CheckConstraint(
                condition=~Q(state="ready") | (~Q(path="") & Q(bytes__isnull=False) & ~Q(sha1="")),
                name="storage_cached_image_ready_complete",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.identifier} ({self.state})"


class VolumeKind(models.TextChoices):
    PERSISTENT = "persistent"
    STATIC = "static"
    VOLATILE = "volatile"


class VolumeState(models.TextChoices):
    CREATING = "creating"
    AVAILABLE = "available"
    ATTACHING = "attaching"
    IN_USE = "in-use"
    DETACHING = "detaching"
    DELETING = "deleting"
    DELETED = "deleted"
    ERROR = "error"


class VolumeBackendName(models.TextChoices):
    FILE = "file"
    ISCSI = "iscsi"


class VolumeFormat(models.TextChoices):
    QCOW2 = "qcow2"
    RAW = "raw"


# States in which a volume exists on its backend (or is being made or removed there) and counts against quota.
LIVE_VOLUME_STATES = tuple(s.value for s in VolumeState if s.value != VolumeState.DELETED)
# States in which a VM holds (or is taking or giving back) the volume: it must not be deleted.
HELD_VOLUME_STATES = (VolumeState.ATTACHING, VolumeState.IN_USE, VolumeState.DETACHING)


class VolumeQuerySet(models.QuerySet["Volume"]):
    def live(self) -> VolumeQuerySet:
        return self.exclude(state=VolumeState.DELETED)


class Volume(models.Model):
    """A disk of a project (DESIGN §5), on the ``file`` or ``iscsi`` backend.

    ``persistent`` volumes outlive VMs and are held by at most one VM; ``static`` ones are read-only copies of a
    Marketplace ``disk`` image that many VMs may hold at once; ``volatile`` ones are born held by their VM and
    destroyed when it ends. Storage knows a VM only as an opaque *holder* string (``VolumeHolder``). Where the
    volume lives (``path``, ``iqn``) is fixed when it is made, so that changing the settings later moves no
    existing volume."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100)
    project = models.ForeignKey("accounts.Project", on_delete=models.PROTECT, related_name="volumes")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="volumes"
    )
    kind = models.CharField(max_length=10, choices=VolumeKind.choices, default=VolumeKind.PERSISTENT)
    size_gib = models.PositiveIntegerField()
    backend = models.CharField(max_length=10, choices=VolumeBackendName.choices)
    format = models.CharField(max_length=10, choices=VolumeFormat.choices)
    image = models.ForeignKey("marketplace.Image", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    image_identifier = models.CharField(max_length=27, blank=True)
    allowed_by = models.JSONField(
        default=list,
        blank=True,
        help_text="A static volume's Marketplace entries ({endorser, created}) whose endorsements allowed its image "
        "at the moment of use: at the request, then again when the worker copied the checked bytes.",
    )
    state = models.CharField(max_length=10, choices=VolumeState.choices, default=VolumeState.CREATING)
    state_message = models.TextField(blank=True)
    path = models.CharField(max_length=1000, help_text="The file holding the data (the LUN's backing store).")
    iqn = models.CharField(max_length=223, blank=True, help_text="iSCSI target name (iscsi backend).")
    chap_username = models.CharField(max_length=64, blank=True)
    chap_secret = models.CharField(max_length=64, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    objects = VolumeQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["project", "state"], name="volume_project_state")]
        constraints = [
            models.CheckConstraint(condition=Q(size_gib__gt=0), name="volume_has_size"),
            models.CheckConstraint(condition=Q(state__in=VolumeState.values), name="volume_state_known"),
            models.CheckConstraint(condition=Q(kind__in=VolumeKind.values), name="volume_kind_known"),
            models.CheckConstraint(condition=Q(backend__in=VolumeBackendName.values), name="volume_backend_known"),
            models.CheckConstraint(condition=Q(format__in=VolumeFormat.values), name="volume_format_known"),
            # A static volume is a copy of a Marketplace image; the others are empty disks.
            models.CheckConstraint(
                condition=(Q(kind="static") & ~Q(image_identifier="")) | (~Q(kind="static") & Q(image_identifier="")),
                name="volume_static_has_image",
            ),
            models.CheckConstraint(condition=~Q(backend="iscsi") | ~Q(iqn=""), name="volume_iscsi_has_iqn"),
            models.UniqueConstraint(fields=["iqn"], condition=~Q(iqn=""), name="volume_iqn_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.uuid})"

    @property
    def read_only(self) -> bool:
        return self.kind == VolumeKind.STATIC


class HolderState(models.TextChoices):
    ATTACHING = "attaching"
    ATTACHED = "attached"
    DETACHING = "detaching"


class VolumeHolder(models.Model):
    """A VM holding a volume, known only by its opaque ``holder`` string (the instance's UUID): one row per
    (volume, holder). A persistent or volatile volume has at most one; a static volume any number."""

    volume = models.ForeignKey(Volume, on_delete=models.CASCADE, related_name="holders")
    holder = models.CharField(max_length=100)
    state = models.CharField(max_length=10, choices=HolderState.choices, default=HolderState.ATTACHING)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["volume", "holder"], name="volume_holder_unique"),
            models.CheckConstraint(condition=Q(state__in=HolderState.values), name="volume_holder_state_known"),
        ]
        indexes = [models.Index(fields=["holder"], name="volume_holder_by_holder")]

    def __str__(self) -> str:
        return f"{self.volume_id} held by {self.holder} ({self.state})"
