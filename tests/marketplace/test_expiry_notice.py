"""The daily task that mails endorsers whose current endorsements expire within three days."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.conf import settings
from django.core import mail

from core.models import AuditEntry
from marketplace import services, tasks
from marketplace.models import Entry
from tests.marketplace.conftest import IMAGE, OTHER_IMAGE, T0, Image

pytestmark = pytest.mark.django_db

NOW = T0 + dt.timedelta(days=30)
THIRD = Image(b"alma 9 root filesystem")
FOURTH = Image(b"rocky 9 root filesystem")


@pytest.fixture
def entries(owner, staff, registered, entry_for):
    """The creator endorses four images (two expire in 1 and 2 days, one in 5 days, one was deprecated),
    security@ one that expires in 2 days."""
    registered(owner, "owner")
    registered(staff, "staff")
    soon, later = NOW + dt.timedelta(days=1), NOW + dt.timedelta(days=2)

    def upload(name, user, image, **fields):
        services.entry_upload(raw=entry_for(name, image=image, **fields), uploader=user)

    upload("owner", owner, IMAGE, valid=soon, title="Ubuntu 24.04")
    upload("owner", owner, OTHER_IMAGE, valid=later, title="Debian 12")
    upload("owner", owner, THIRD, valid=NOW + dt.timedelta(days=5), title="Alma 9")
    upload("owner", owner, FOURTH, valid=soon, title="Rocky 9", deprecated="end of life")
    upload("staff", staff, IMAGE, valid=later)


def test_each_endorser_gets_one_mail_listing_the_images_that_expire_soon(entries):
    with time_machine.travel(NOW, tick=False):
        sent = tasks.notify_expiring()

    assert sent == 2
    by_recipient = {m.to[0]: m for m in mail.outbox}
    assert set(by_recipient) == {"creator@example.org", "security@example.org"}
    creator = by_recipient["creator@example.org"]
    assert creator.subject == f"[{settings.SITE_NAME}] 2 Marketplace endorsements expire soon"
    assert "Ubuntu 24.04" in creator.body and "Debian 12" in creator.body
    assert f"{settings.SITE_URL}/marketplace/images/{IMAGE.identifier}/" in creator.body
    assert "Alma 9" not in creator.body  # five days away
    assert "Rocky 9" not in creator.body  # deprecated: not a current endorsement
    assert by_recipient["security@example.org"].subject.endswith("1 Marketplace endorsement expire soon")
    assert AuditEntry.objects.filter(action="marketplace.expiry.notified").count() == 2


def test_a_second_run_the_same_day_sends_nothing_again(entries):
    with time_machine.travel(NOW, tick=False):
        tasks.notify_expiring()
    with time_machine.travel(NOW + dt.timedelta(hours=6), tick=False):
        assert tasks.notify_expiring() == 0
    assert len(mail.outbox) == 2
    assert Entry.objects.filter(notified_expiry=NOW).count() == 3


def test_an_entry_coming_into_the_window_later_is_mailed_then(entries):
    with time_machine.travel(NOW, tick=False):
        tasks.notify_expiring()
    mail.outbox.clear()
    with time_machine.travel(NOW + dt.timedelta(days=2, hours=1), tick=False):
        assert tasks.notify_expiring() == 1
    (message,) = mail.outbox
    assert message.to == ["creator@example.org"] and "Alma 9" in message.body and "Ubuntu" not in message.body


def test_entries_of_revoked_keys_and_already_expired_ones_are_not_mailed(entries, staff, keyring):
    with time_machine.travel(NOW, tick=False):
        services.pgp_key_revoke(actor=staff, fingerprint=keyring["staff"].fingerprint)
    with time_machine.travel(NOW + dt.timedelta(days=1, seconds=1), tick=False):
        tasks.notify_expiring()
    # Ubuntu (creator) has just expired; security@'s key is revoked: only Debian is left to announce.
    (message,) = mail.outbox
    assert message.to == ["creator@example.org"] and "Debian 12" in message.body and "Ubuntu" not in message.body


def test_a_failed_mail_leaves_the_entries_for_the_next_run(entries, settings):
    settings.EMAIL_BACKEND = "tests.marketplace.test_expiry_notice.FailingBackend"
    with time_machine.travel(NOW, tick=False), pytest.raises(OSError):
        tasks.notify_expiring()
    assert not Entry.objects.filter(notified_expiry__isnull=False).exists()
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    with time_machine.travel(NOW, tick=False):
        assert tasks.notify_expiring() == 2


def test_the_task_runs_daily_from_celery_beat():
    schedule = settings.CELERY_BEAT_SCHEDULE["marketplace.notify_expiring"]
    assert schedule["task"] == tasks.notify_expiring.name == "marketplace.notify_expiring"


class FailingBackend:
    """An SMTP server that is down."""

    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        raise OSError("connection refused")
