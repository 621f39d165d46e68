"""Concurrent uploads to one timeline, on PostgreSQL: the endorser's row lock keeps exactly one latest."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection

from core.errors import Conflict
from marketplace import services
from marketplace.models import Endorser, Entry
from tests.marketplace.conftest import T0

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def race(documents: list[bytes], uploader) -> list[object]:
    """Upload every document at once, one thread each; return each one's entry or error."""
    barrier = threading.Barrier(len(documents))
    outcomes: list[object] = [None] * len(documents)

    def run(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = services.entry_upload(raw=documents[index], uploader=uploader)
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test looks at
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(documents))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_the_same_entry_uploaded_twice_at_once_is_stored_once(owner, registered, entry_for):
    registered(owner, "owner")
    raw = entry_for("owner", at=T0)
    outcomes = race([raw, raw, raw], owner)
    assert sum(isinstance(o, Entry) for o in outcomes) == 1
    assert all(isinstance(o, Conflict) for o in outcomes if not isinstance(o, Entry)), outcomes
    assert Entry.objects.count() == 1
    assert Endorser.objects.get().entry_count == 1


def test_newer_and_older_racing_end_with_the_newest_as_the_only_latest(owner, registered, entry_for):
    registered(owner, "owner")
    documents = [entry_for("owner", at=T0 + dt.timedelta(minutes=n)) for n in range(4)]
    outcomes = race(documents, owner)
    stored = Entry.objects.order_by("created")
    # Whatever the order they got the lock in, later arrivals older than the latest were refused.
    assert all(isinstance(o, Entry | Conflict) for o in outcomes), outcomes
    assert stored.count() == sum(isinstance(o, Entry) for o in outcomes) >= 1
    latest = Entry.objects.get(is_latest=True)
    assert latest.created == T0 + dt.timedelta(minutes=3)
    assert Endorser.objects.get().entry_count == stored.count()
