"""Per-endorser timelines (DESIGN §2.3): latest, 409 for older or equal, deprecation, expiry, revocation."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from core.errors import ApplicationError
from core.models import AuditEntry
from marketplace import selectors, services
from marketplace.models import Entry
from tests.marketplace.conftest import IMAGE, T0

pytestmark = pytest.mark.django_db

HOUR = dt.timedelta(hours=1)


@pytest.fixture
def publish(entry_for, owner, staff):
    users = {"owner": owner, "staff": staff}

    def upload(name: str = "owner", **kwargs) -> Entry:
        return services.entry_upload(raw=entry_for(name, **kwargs), uploader=users[name])

    return upload


def statuses(identifier: str = IMAGE.identifier) -> dict[str, str]:
    image = selectors.image_get(identifier=identifier)
    return {e.endorser.email: selectors.entry_status(e) for e in image.latest_entries}


def test_a_newer_entry_becomes_the_latest_and_the_older_stays(owner, registered, publish):
    registered(owner, "owner")
    first = publish(at=T0)
    second = publish(at=T0 + HOUR, title="Ubuntu 24.04.1 LTS")
    first.refresh_from_db()
    assert not first.is_latest and second.is_latest
    assert Entry.objects.count() == 2
    assert selectors.image_get(identifier=IMAGE.identifier).title == "Ubuntu 24.04.1 LTS"


@pytest.mark.parametrize("offset", [dt.timedelta(0), -HOUR], ids=["equal", "older"])
def test_an_upload_not_newer_than_the_latest_is_refused_with_409(owner, registered, publish, api_as, entry_for, offset):
    registered(owner, "owner")
    publish(at=T0)
    response = api_as(owner).post(
        "/api/v1/marketplace/entries/", data=entry_for("owner", at=T0 + offset), content_type="application/xml"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "not-newer"
    assert "2024-01-01T12:00:00Z" in response.json()["detail"]
    assert Entry.objects.count() == 1 and Entry.objects.get().created == T0


def test_deprecation_and_undeprecation_are_newer_entries(owner, registered, publish):
    registered(owner, "owner")
    publish(at=T0)
    assert statuses() == {"creator@example.org": "valid"}
    deprecated = publish(at=T0 + HOUR, deprecated="CVE-2024-1234 in the kernel")
    assert deprecated.deprecated_reason == "CVE-2024-1234 in the kernel"
    assert statuses() == {"creator@example.org": "deprecated"}
    publish(at=T0 + 2 * HOUR)
    assert statuses() == {"creator@example.org": "valid"}
    changes = list(
        AuditEntry.objects.filter(action="marketplace.entry.uploaded").order_by("id").values_list("details", flat=True)
    )
    assert [c["change"] for c in changes] == ["new", "deprecated", "undeprecated"]
    assert Entry.objects.filter(image__identifier=IMAGE.identifier).count() == 3


def test_an_entry_expires_when_its_valid_date_passes(owner, registered, publish):
    registered(owner, "owner")
    publish(at=T0, valid=dt.datetime(2030, 6, 1, tzinfo=dt.UTC))
    with time_machine.travel(dt.datetime(2030, 5, 31, 23, 59, tzinfo=dt.UTC)):
        assert statuses() == {"creator@example.org": "valid"}
        assert len(selectors.current_endorsements(selectors.image_get(identifier=IMAGE.identifier))) == 1
    with time_machine.travel(dt.datetime(2030, 6, 1, 0, 0, 1, tzinfo=dt.UTC)):
        assert statuses() == {"creator@example.org": "expired"}
        assert selectors.current_endorsements(selectors.image_get(identifier=IMAGE.identifier)) == []


def test_two_endorsers_keep_separate_timelines_on_one_image(owner, staff, registered, publish):
    registered(owner, "owner")
    registered(staff, "staff")
    publish("owner", at=T0)
    publish("staff", at=T0 - HOUR)  # older than the owner's, but the staff timeline is its own
    publish("staff", at=T0 + HOUR, deprecated="Not approved for this site")
    assert statuses() == {"creator@example.org": "valid", "security@example.org": "deprecated"}
    image = selectors.image_get(identifier=IMAGE.identifier)
    assert [e.endorser.email for e in selectors.current_endorsements(image)] == ["creator@example.org"]
    assert Entry.objects.filter(is_latest=True).count() == 2


def test_entries_of_a_revoked_key_stay_visible_marked_and_stop_counting(owner, staff, registered, publish, api):
    key = registered(owner, "owner")
    registered(staff, "staff")
    publish("owner", at=T0)
    publish("staff", at=T0)
    services.pgp_key_revoke(actor=owner, fingerprint=key.fingerprint)
    assert statuses() == {"creator@example.org": "revoked", "security@example.org": "valid"}
    body = api.get(f"/api/v1/marketplace/images/{IMAGE.identifier}/").json()
    assert body["current_endorsements"] == 1
    owner_entry = next(e for e in body["endorsements"] if e["endorser"] == "creator@example.org")
    assert owner_entry["key_revoked"] is True and owner_entry["status"] == "revoked"


def test_an_entry_dated_before_the_revocation_is_refused_after_it(owner, registered, entry_for):
    # A revoked key makes no new endorsements, whatever the entry's created time claims (DESIGN §2.2).
    key = registered(owner, "owner")
    services.pgp_key_revoke(actor=owner, fingerprint=key.fingerprint)
    with pytest.raises(ApplicationError) as refused:
        services.entry_upload(raw=entry_for("owner", at=T0), uploader=owner)  # signed in 2024, before revoking
    assert refused.value.code == "revoked-key"
