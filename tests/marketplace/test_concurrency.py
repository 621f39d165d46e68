"""Concurrent uploads on PostgreSQL: the endorser's row lock keeps exactly one latest per timeline, and the
image's row keeps one set of fixed facts however many endorsers publish it at once."""

from __future__ import annotations

import datetime as dt

import pytest

from core.errors import Conflict
from marketplace import services
from marketplace.models import Endorser, Entry, Image
from tests.marketplace.conftest import IMAGE, T0
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
