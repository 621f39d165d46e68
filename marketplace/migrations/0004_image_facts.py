"""Fix each image's checksums and size from its oldest entry (services.entry_upload keeps them fixed from now on),
and recompute its display columns as services.image_display_refresh does.

"Oldest" is the first the Marketplace stored (lowest id): a signer may backdate ``created``. Images whose entries
already disagree are printed, never changed otherwise; images claiming a SHA-256 that an older image claimed first
are printed too (the claim counts for the older one only). Nothing is deleted."""

from django.db import migrations, models
from django.db.models import Min
from django.utils import timezone


def fix_from_oldest_entry(apps, schema_editor):
    Image = apps.get_model("marketplace", "Image")
    Entry = apps.get_model("marketplace", "Entry")
    first_claims: dict[str, str] = {}  # SHA-256 -> the identifier that claimed it first
    images = Image.objects.order_by("id")
    for image in images.iterator(chunk_size=500):
        entries = list(Entry.objects.filter(image=image).order_by("id").values("bytes", "details", "sha1", "sha256"))
        if not entries:
            continue
        oldest = entries[0]
        checksums = {a: v.lower() for a, v in (oldest["details"] or {}).get("checksums", {}).items()}
        checksums.setdefault("SHA-1", oldest["sha1"])
        if oldest["sha256"]:
            checksums.setdefault("SHA-256", oldest["sha256"])
        disagree = set()
        for entry in entries[1:]:
            if entry["bytes"] != oldest["bytes"]:
                disagree.add(f"bytes {entry['bytes']} (fixed {oldest['bytes']})")
            for algorithm, value in (entry["details"] or {}).get("checksums", {}).items():
                if algorithm in checksums and checksums[algorithm] != value.lower():
                    disagree.add(f"{algorithm} {value.lower()} (fixed {checksums[algorithm]})")
        if disagree:
            print(
                f"\n  image {image.identifier}: later entries disagree with the oldest: {'; '.join(sorted(disagree))}"
            )
        image.bytes = oldest["bytes"]
        image.checksums = checksums
        image.sha256 = checksums.get("SHA-256", "")
        if image.sha256:
            first = first_claims.setdefault(image.sha256, image.identifier)
            if first != image.identifier:
                print(f"\n  image {image.identifier}: its SHA-256 {image.sha256} was claimed first by {first}")
        image.save(update_fields=["bytes", "checksums", "sha256"])


def refresh_display(apps, schema_editor):
    """The display columns of every image, as ``services.image_display_refresh`` computes them now."""
    from marketplace.selectors import DISPLAY_FIELDS, image_display_choice

    Image = apps.get_model("marketplace", "Image")
    Entry = apps.get_model("marketplace", "Entry")
    now = timezone.now()
    for image in Image.objects.order_by("id").iterator(chunk_size=500):
        latest = list(Entry.objects.filter(image=image, is_latest=True).select_related("key").order_by("id"))
        starts = dict(
            Entry.objects.filter(image=image)
            .order_by()
            .values("endorser_id")
            .annotate(first=Min("id"))
            .values_list("endorser_id", "first")
        )
        shown = image_display_choice(latest, timeline_starts=starts, now=now)
        if shown is not None:
            Image.objects.filter(pk=image.pk).update(**{name: getattr(shown, name) for name in DISPLAY_FIELDS})


class Migration(migrations.Migration):
    dependencies = [
        ("marketplace", "0003_endorser_account"),
    ]

    operations = [
        migrations.AddField(
            model_name="image",
            name="checksums",
            field=models.JSONField(default=dict, help_text="Fixed checksums: algorithm → lower-case hex."),
        ),
        migrations.AddField(
            model_name="image",
            name="sha256",
            field=models.CharField(blank=True, help_text="The fixed SHA-256, for checksum rules.", max_length=64),
        ),
        migrations.RunPython(fix_from_oldest_entry, migrations.RunPython.noop, elidable=True),
        migrations.RunPython(refresh_display, migrations.RunPython.noop, elidable=True),
        migrations.AddIndex(
            model_name="image",
            index=models.Index(
                condition=models.Q(("sha256", ""), _negated=True), fields=["sha256", "id"], name="mp_image_sha256"
            ),
        ),
    ]
