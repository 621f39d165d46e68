"""The bulk import's store (``services.entries.entries_store``): many verified entries per transaction, leaving
exactly the rows, refusals, verdicts, trust changes and audit entries that storing them one by one
(``entry_store``, the upload's store) leaves; its chunks and verifying threads keep the source's order."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from django.db import transaction

from core.errors import ApplicationError
from core.models import AuditEntry
from marketplace.models import Endorser, Entry, Image, TrustChange
from marketplace.services import imports
from marketplace.services.entries import entries_store, entry_store, entry_upload, entry_verify
from marketplace.sources import Document
from tests.marketplace.conftest import IMAGE, OTHER_IMAGE, T0
from tests.marketplace.conftest import Image as Content

pytestmark = pytest.mark.django_db

HOUR = dt.timedelta(hours=1)
THIRD_IMAGE = Content(b"alma 9 root filesystem")


@dataclasses.dataclass(frozen=True)
class Resized(Content):
    """IMAGE's identifier and checksums with another size: an entry whose facts disagree with IMAGE's."""

    @property
    def checksums(self) -> dict[str, str]:
        return IMAGE.checksums


def snapshot() -> dict[str, Any]:
    """Every row the stores write, by natural keys (ids differ between two runs)."""
    return {
        "entries": sorted(
            (e.image.identifier, e.endorser.email, e.created, repr(entry_columns(e)))
            for e in Entry.objects.select_related("image", "endorser")
        ),
        "endorsers": sorted(
            Endorser.objects.values_list(
                "email",
                "account_id",
                "certificate_subject",
                "subject",
                "first_endorsed",
                "last_endorsed",
                "entry_count",
            )
        ),
        "images": sorted(
            Image.objects.values_list(
                "identifier",
                "bytes",
                "checksums",
                "sha256",
                "title",
                "os",
                "first_endorsed",
                "updated",
                "verdict",
                "verdict_policy",
                "verdict_until",
            )
        ),
        "trust_changes": sorted(TrustChange.objects.values_list("image__identifier", "cause", "verdict_before")),
        "audit": sorted(
            (a.action, a.object_repr, sorted(a.details.items()))
            for a in AuditEntry.objects.filter(action__startswith="marketplace.entry")
        ),
    }


def entry_columns(entry: Entry) -> dict[str, Any]:
    """Every column of an entry but its id, its upload time and the ids of its image and endorser."""
    skipped = {"id", "uploaded", "image_id", "endorser_id"}
    return {
        f.attname: bytes(getattr(entry, f.attname)) if f.attname == "raw" else getattr(entry, f.attname)
        for f in Entry._meta.concrete_fields
        if f.attname not in skipped
    }


def outcome(result: Entry | ApplicationError) -> tuple[str, ...]:
    if isinstance(result, ApplicationError):
        return ("refused", result.code or "", result.message)
    return ("stored", result.image.identifier, result.endorser.email, result.created.isoformat())


def test_a_batch_leaves_exactly_what_storing_its_entries_one_by_one_leaves(
    owner, staff, registered, entry_for, settings
):
    registered(owner, "owner")
    registered(staff, "staff")
    entry_upload(raw=entry_for("owner", at=T0), uploader=owner)
    entry_upload(raw=entry_for("owner", image=OTHER_IMAGE, os="Debian", at=T0), uploader=owner)
    third = entry_for("owner", image=THIRD_IMAGE, os="Alma", at=T0)
    documents = [
        # staff's first entry disagrees with IMAGE's size: its endorser row is made by its next one instead
        entry_for("staff", image=Resized(b"tiny"), at=T0 + HOUR / 4),
        entry_for("staff", image=OTHER_IMAGE, os="Debian GNU/Linux", at=T0 + HOUR),
        entry_for("owner", at=T0 + HOUR, title="Ubuntu 24.04.1"),
        # the same image again (a new transaction): its only current endorsement deprecated, a trust change
        entry_for("owner", at=T0 + 2 * HOUR, deprecated="superseded"),
        entry_for("owner", at=T0 + HOUR / 2),  # older than the latest: not newer
        third,
        third,  # twice in one source
    ]
    verified = [entry_verify(raw=raw) for raw in documents]
    details = {"source": "test"}

    with transaction.atomic():
        batched = [outcome(r) for r in entries_store(verified, uploader=None, audit_details=details)]
        after_batch = snapshot()
        transaction.set_rollback(True)
    with transaction.atomic():
        one_by_one = []
        for item in verified:
            try:
                result: Entry | ApplicationError = entry_store(
                    item, uploader=None, audit_action="marketplace.entry.imported", audit_details=details
                )
            except ApplicationError as exc:
                result = exc
            one_by_one.append(outcome(result))
        after_one_by_one = snapshot()
        transaction.set_rollback(True)

    assert batched == one_by_one
    assert [o[1] if o[0] == "refused" else "stored" for o in batched] == [
        "bytes-conflict",
        "stored",
        "stored",
        "stored",
        "not-newer",
        "stored",
        "not-newer",
    ]
    assert after_batch == after_one_by_one
    assert after_batch["trust_changes"] == [(IMAGE.identifier, TrustChange.Cause.DEPRECATED, "allowed")]
    staff_row = next(e for e in after_batch["endorsers"] if e[0] == staff.email)
    assert staff_row[4] == T0 + HOUR and staff_row[6] == 1  # first_endorsed by its first accepted entry


def test_an_endorser_whose_entries_are_all_refused_in_a_batch_is_not_left_behind(owner, staff, registered, entry_for):
    registered(owner, "owner")
    registered(staff, "staff")
    entry_upload(raw=entry_for("owner", at=T0), uploader=owner)
    verified = [entry_verify(raw=entry_for("staff", image=Resized(b"tiny"), at=T0 + HOUR))]
    [result] = entries_store(verified, uploader=None)
    assert isinstance(result, ApplicationError) and result.code == "bytes-conflict"
    assert list(Endorser.objects.values_list("email", flat=True)) == [owner.email]
    assert Entry.objects.count() == 1


def test_a_key_revoked_between_verification_and_store_is_refused_by_the_batch(owner, registered, entry_for):
    from marketplace import services

    key = registered(owner, "owner")
    verified = [entry_verify(raw=entry_for("owner", at=T0))]
    services.pgp_key_revoke(actor=owner, fingerprint=key.fingerprint)
    [result] = entries_store(verified, uploader=None)
    assert isinstance(result, ApplicationError) and result.code == "revoked-key"
    assert "was revoked on" in result.message
    assert not Entry.objects.exists() and not Image.objects.exists() and not Endorser.objects.exists()


def test_chunks_verified_by_several_threads_keep_each_timeline_in_order(owner, registered, entry_for, monkeypatch):
    """A timeline spread over several chunks and groups, with two verifying threads: stored oldest first, the
    newest the only latest, the counters exact; a re-run finds every entry known."""
    monkeypatch.setattr(imports, "CHUNK", 3)
    registered(owner, "owner")
    documents = [
        Document(f"{n}.xml", entry_for("owner", image=image, at=T0 + n * HOUR))
        for n in range(4)
        for image in (IMAGE, OTHER_IMAGE)
    ]
    summary = imports.entries_import(documents, source="test", jobs=2)
    assert (summary.accepted, summary.known, dict(summary.refused)) == (8, 0, {})
    for image in (IMAGE, OTHER_IMAGE):
        latest = Entry.objects.get(image__identifier=image.identifier, is_latest=True)
        assert latest.created == T0 + 3 * HOUR
    endorser = Endorser.objects.get()
    assert (endorser.entry_count, endorser.last_endorsed) == (8, T0 + 3 * HOUR)
    assert Image.objects.filter(verdict="allowed").count() == 2
    assert AuditEntry.objects.filter(action="marketplace.entry.imported").count() == 8

    again = imports.entries_import(documents, source="test", jobs=2)
    assert (again.accepted, again.known) == (0, 8)
