"""Concurrent uploads on PostgreSQL: the endorser's row lock keeps exactly one latest per timeline, and the
image's row keeps one set of fixed facts however many endorsers publish it at once."""

from __future__ import annotations

import datetime as dt

import pytest

from core.errors import Conflict
from marketplace import services
from marketplace.models import Endorser, Entry, Image
from tests.marketplace.conftest import IMAGE, OTHER_IMAGE, T0
from tests.race import race

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def uploads(documents: list[bytes], uploaders: list) -> list[object]:
    """Upload every document at once, each by its uploader; each one's entry or error."""
    return race(
        [
            (lambda raw=raw, user=user: services.entry_upload(raw=raw, uploader=user))
            for raw, user in zip(documents, uploaders, strict=True)
        ]
    )


def test_the_same_entry_uploaded_twice_at_once_is_stored_once(owner, registered, entry_for):
    registered(owner, "owner")
    raw = entry_for("owner", at=T0)
    outcomes = uploads([raw, raw, raw], [owner] * 3)
    assert sum(isinstance(o, Entry) for o in outcomes) == 1
    assert all(isinstance(o, Conflict) for o in outcomes if not isinstance(o, Entry)), outcomes
    assert Entry.objects.count() == 1
    assert Endorser.objects.get().entry_count == 1


def test_newer_and_older_racing_end_with_the_newest_as_the_only_latest(owner, registered, entry_for):
    registered(owner, "owner")
    documents = [entry_for("owner", at=T0 + dt.timedelta(minutes=n)) for n in range(4)]
    outcomes = uploads(documents, [owner] * 4)
    stored = Entry.objects.order_by("created")
    # Whatever the order they got the lock in, later arrivals older than the latest were refused.
    assert all(isinstance(o, Entry | Conflict) for o in outcomes), outcomes
    assert stored.count() == sum(isinstance(o, Entry) for o in outcomes) >= 1
    latest = Entry.objects.get(is_latest=True)
    assert latest.created == T0 + dt.timedelta(minutes=3)
    assert Endorser.objects.get().entry_count == stored.count()


def test_endorsers_publishing_one_new_image_at_once_share_one_image_row(owner, staff, registered, entry_for):
    """Different endorsers hold different locks, so both may find no image row and create it: the loser of
    the identifier's unique constraint takes the winner's row and is checked against its facts."""
    registered(owner, "owner")
    registered(staff, "staff")
    outcomes = uploads([entry_for("owner", at=T0), entry_for("staff", at=T0)], [owner, staff])
    assert all(isinstance(o, Entry) for o in outcomes), outcomes
    image = Image.objects.get()
    assert image.identifier == IMAGE.identifier
    assert image.checksums == IMAGE.checksums
    assert Entry.objects.filter(image=image, is_latest=True).count() == 2


def test_a_batched_import_and_uploads_of_its_image_at_once_keep_one_latest_per_timeline(
    owner, staff, registered, entry_for
):
    """The import's batch locks its endorsers, then its images, as an upload does: racing uploads of the same
    image (by its endorser and by another) wait their turn; every timeline ends with its newest as the only
    latest, the counters count what was stored, and no racer dies of a deadlock."""
    from marketplace.services.entries import entries_store, entry_verify

    registered(owner, "owner")
    registered(staff, "staff")
    minute = dt.timedelta(minutes=1)
    batch = [entry_verify(raw=entry_for("owner", image=IMAGE, at=T0 + n * minute)) for n in (0, 2, 4)]
    batch.append(entry_verify(raw=entry_for("owner", image=OTHER_IMAGE, os="Debian", at=T0)))
    outcomes = race(
        [
            lambda: entries_store(batch, uploader=None),
            lambda: services.entry_upload(raw=entry_for("owner", at=T0 + 3 * minute), uploader=owner),
            lambda: services.entry_upload(raw=entry_for("staff", at=T0 + minute), uploader=staff),
        ]
    )
    stored, newer_upload, staff_upload = outcomes
    assert isinstance(stored, list), stored
    assert all(isinstance(o, Entry | Conflict) for o in stored), stored
    assert isinstance(newer_upload, Entry | Conflict), newer_upload
    assert isinstance(staff_upload, Entry), staff_upload
    image = Image.objects.get(identifier=IMAGE.identifier)
    assert Entry.objects.get(image=image, endorser__email=owner.email, is_latest=True).created == T0 + 4 * minute
    assert Entry.objects.filter(image=image, is_latest=True).count() == 2
    for endorser in Endorser.objects.all():
        assert endorser.entry_count == Entry.objects.filter(endorser=endorser).count()
    assert Entry.objects.filter(image__identifier=OTHER_IMAGE.identifier, is_latest=True).count() == 1
    assert set(Image.objects.values_list("verdict", flat=True)) == {"allowed"}


def test_two_batched_imports_of_the_same_entries_at_once_store_each_entry_once(owner, staff, registered, entry_for):
    from marketplace.services.entries import entries_store, entry_verify

    registered(owner, "owner")
    registered(staff, "staff")
    documents = [entry_for("owner", at=T0), entry_for("staff", image=OTHER_IMAGE, at=T0), entry_for("staff", at=T0)]
    forward = [entry_verify(raw=raw) for raw in documents]
    outcomes = race(
        [lambda: entries_store(forward, uploader=None), lambda: entries_store(forward[::-1], uploader=None)]
    )
    assert all(isinstance(o, list) for o in outcomes), outcomes
    stored = [r for o in outcomes for r in o if isinstance(r, Entry)]
    assert len(stored) == 3, outcomes
    assert Entry.objects.count() == 3 and Entry.objects.filter(is_latest=True).count() == 3
    assert sorted(Endorser.objects.values_list("entry_count", flat=True)) == [1, 2]
