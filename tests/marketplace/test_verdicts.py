"""Each image's verdict under the active policy is kept for the console's filters (issue 15), and the filters are
right at once after each of the four events that change a verdict: an entry arrives, a key is revoked, the policy
changes, an endorsement expires."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest
import time_machine
from django.utils import timezone

from marketplace import services, tasks
from marketplace.models import Image, SitePolicy
from marketplace.policy import PolicyRules, verdicts
from marketplace.policy.services import policy_change
from tests.marketplace.conftest import IMAGE, OTHER_IMAGE, T0

pytestmark = pytest.mark.django_db

CONSOLE = "/marketplace/console/"


@pytest.fixture
def as_staff(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def owner_key(owner, registered):
    return registered(owner, "owner")


def filtered(client, verdict: str) -> set[str]:
    response = client.get(CONSOLE, {"verdict": verdict})
    assert response.status_code == 200
    return {row["image"].identifier for row in response.context["page"]}


def kept(image) -> tuple[str, int]:
    row = Image.objects.get(identifier=image.identifier)
    return row.verdict, row.verdict_policy


def active_id() -> int:
    return SitePolicy.objects.get(is_active=True).pk


def test_an_arriving_entry_writes_its_images_verdict_at_once(as_staff, staff, owner, owner_key, entry_for):
    policy_change(actor=staff, rules=PolicyRules.from_json({"os": ["ubuntu"]}))
    services.entry_upload(raw=entry_for("owner"), uploader=owner)
    services.entry_upload(raw=entry_for("owner", image=OTHER_IMAGE, os="Debian", at=T0), uploader=owner)
    assert kept(IMAGE) == ("allowed", active_id())
    assert kept(OTHER_IMAGE) == ("denied", active_id())
    assert filtered(as_staff, "denied") == {OTHER_IMAGE.identifier}
    # A newer entry changes the claim, and the verdict with it.
    services.entry_upload(
        raw=entry_for("owner", image=OTHER_IMAGE, os="Ubuntu", at=T0 + dt.timedelta(hours=1)), uploader=owner
    )
    assert kept(OTHER_IMAGE) == ("allowed", active_id())
    assert filtered(as_staff, "denied") == set()


def test_revoking_a_key_denies_the_images_it_alone_endorsed_at_once(as_staff, owner, owner_key, entry_for):
    services.entry_upload(raw=entry_for("owner"), uploader=owner)
    assert filtered(as_staff, "denied") == set()
    services.pgp_key_revoke(actor=owner, fingerprint=owner_key.fingerprint)
    assert kept(IMAGE) == ("denied", 0)  # the default rules: one current endorsement
    assert filtered(as_staff, "denied") == {IMAGE.identifier}


def test_a_policy_change_is_right_in_the_filter_at_once_and_kept_by_the_task(
    as_staff, staff, owner, owner_key, entry_for
):
    services.entry_upload(raw=entry_for("owner"), uploader=owner)
    services.entry_upload(raw=entry_for("owner", image=OTHER_IMAGE, os="Debian", at=T0), uploader=owner)
    assert filtered(as_staff, "denied") == set()
    policy_change(actor=staff, rules=PolicyRules.from_json({"os": ["debian"]}))
    assert kept(IMAGE) == ("allowed", 0)  # written under the rules before: stale, not trusted
    assert filtered(as_staff, "denied") == {IMAGE.identifier}
    policy_change(actor=staff, rules=PolicyRules.from_json({"os": ["debian"], "mode": "warn"}))
    assert filtered(as_staff, "denied") == set()
    assert filtered(as_staff, "warnings") == {IMAGE.identifier}
    assert tasks.verdicts_refresh() == 2
    assert kept(IMAGE) == ("warnings", active_id())
    assert kept(OTHER_IMAGE) == ("allowed", active_id())
    assert filtered(as_staff, "warnings") == {IMAGE.identifier}
    assert tasks.verdicts_refresh() == 0  # nothing stale: running it again rewrites nothing


def test_an_expiring_endorsement_is_right_in_the_filter_at_once_and_kept_by_the_periodic_task(
    as_staff, owner, owner_key, entry_for
):
    expires = (timezone.now() + dt.timedelta(days=1)).replace(microsecond=0)
    services.entry_upload(raw=entry_for("owner", valid=expires), uploader=owner)
    assert Image.objects.get(identifier=IMAGE.identifier).verdict_until == expires
    assert filtered(as_staff, "denied") == set()
    with time_machine.travel(expires + dt.timedelta(seconds=1)):
        assert filtered(as_staff, "denied") == {IMAGE.identifier}
        assert tasks.verdicts_refresh() == 1
        assert kept(IMAGE) == ("denied", 0)
        assert Image.objects.get(identifier=IMAGE.identifier).verdict_until is None
        assert filtered(as_staff, "denied") == {IMAGE.identifier}


def test_a_filter_over_kept_verdicts_evaluates_no_image_again(as_staff, staff, owner, owner_key, entry_for):
    services.entry_upload(raw=entry_for("owner"), uploader=owner)
    services.entry_upload(raw=entry_for("owner", image=OTHER_IMAGE, os="Debian", at=T0), uploader=owner)
    with mock.patch.object(verdicts, "evaluate", wraps=verdicts.evaluate) as evaluated:
        assert filtered(as_staff, "allowed") == {IMAGE.identifier, OTHER_IMAGE.identifier}
        assert evaluated.call_count == 0
        policy_change(actor=staff, rules=PolicyRules.from_json({"os": ["debian"]}))
        assert filtered(as_staff, "allowed") == {OTHER_IMAGE.identifier}
        assert evaluated.call_count == 2  # both stale until the task has run


def test_a_long_verdict_list_is_paged_by_the_databases_estimate_and_every_page_stays_reachable(
    as_staff, owner, owner_key, entry_for, monkeypatch
):
    from django.db import connection

    from marketplace import selectors, views

    services.entry_upload(raw=entry_for("owner"), uploader=owner)
    services.entry_upload(raw=entry_for("owner", image=OTHER_IMAGE, at=T0), uploader=owner)
    monkeypatch.setattr(views, "PAGE_SIZE", 1)
    monkeypatch.setattr(selectors, "EXACT_COUNT_UP_TO", 0)  # every list is "long"
    first = as_staff.get(CONSOLE, {"verdict": "allowed"})
    second = as_staff.get(CONSOLE, {"verdict": "allowed", "page": 2})
    third = as_staff.get(CONSOLE, {"verdict": "allowed", "page": 3})
    shown = [row["image"].identifier for response in (first, second) for row in response.context["page"]]
    assert sorted(shown) == sorted([IMAGE.identifier, OTHER_IMAGE.identifier])
    assert first.context["page"].has_next() and not second.context["page"].has_next()
    assert list(third.context["page"]) == [] and b"No image with this verdict" in third.content
    estimated = connection.vendor == "postgresql"
    assert first.context["page"].paginator.count_is_estimate is estimated
    assert (b"about" in first.content) is estimated


def test_a_page_number_past_any_list_shows_the_first_page(as_staff, owner, owner_key, entry_for):
    services.entry_upload(raw=entry_for("owner"), uploader=owner)
    response = as_staff.get(CONSOLE, {"verdict": "allowed", "page": "99999999999999999999"})
    assert response.status_code == 200
    assert [row["image"].identifier for row in response.context["page"]] == [IMAGE.identifier]


def test_after_a_policy_change_too_many_stale_verdicts_wait_for_the_refresh_and_the_console_says_so(
    as_staff, staff, owner, owner_key, entry_for, monkeypatch
):
    services.entry_upload(raw=entry_for("owner"), uploader=owner)
    services.entry_upload(raw=entry_for("owner", image=OTHER_IMAGE, os="Debian", at=T0), uploader=owner)
    monkeypatch.setattr(verdicts, "STALE_INLINE_UP_TO", 1)  # a large Marketplace: more stale than a request judges
    policy_change(actor=staff, rules=PolicyRules.from_json({"os": ["debian"]}))
    with mock.patch.object(verdicts, "evaluate", wraps=verdicts.evaluate) as evaluated:
        response = as_staff.get(CONSOLE, {"verdict": "allowed"})
        assert evaluated.call_count == 0
    # No stale verdict is shown: the list holds only what is known under the new policy, and says what it waits for.
    assert list(response.context["page"]) == []
    assert b"The verdicts of 2 images under the policy in force are still being worked out" in response.content
    assert tasks.verdicts_refresh() == 2
    response = as_staff.get(CONSOLE, {"verdict": "allowed"})
    assert [row["image"].identifier for row in response.context["page"]] == [OTHER_IMAGE.identifier]
    assert b"still being worked out" not in response.content
