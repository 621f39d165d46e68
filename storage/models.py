"""Storage data: the image cache (DESIGN §5).

One ``CachedImage`` row per Marketplace identifier is the one cached origin of that image for every worker
process and host: whoever claims the row (``state`` ``downloading`` with its own ``claim`` token) downloads,
everyone else waits for it. ``storage.images`` holds the rules; the row holds where the copy is and what was
checked.
"""

from __future__ import annotations

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
