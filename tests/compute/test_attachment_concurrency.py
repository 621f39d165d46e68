"""Attaches racing on PostgreSQL: one persistent volume to two instances at once, and many volumes to one instance
at once (device names)."""

from __future__ import annotations

import shutil

import pytest
from django.db import connection

from compute import attachments
from compute.models import Attachment, Host
from core.errors import Conflict
from storage import services as storage_services
from storage.models import Volume
from tests.race import race

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
]


@pytest.fixture
def running(types, instance_on):
    host = Host.objects.create(name="h1", uri="test:///default", vcpus=8, ram_mib=16384)
    return lambda name: instance_on(host, types["t1.micro"], state="running", name=name)


@pytest.fixture
def volume(owner, project, volume_settings):
    def make(name: str) -> Volume:
        made = storage_services.volume_create(actor=owner, project=project, name=name, size_gib=1)
        return storage_services.volume_provision(volume_id=made.pk)

    return make


def _attach(owner, instance, volume):
    def call():
        try:
            return attachments.instance_attach(actor=owner, instance=instance, volume_id=str(volume.uuid))
        finally:
            connection.close()

    return call


def test_two_attaches_of_one_persistent_volume_at_once_one_wins_the_other_is_409(owner, running, volume):
    data = volume("data")
    first, second = running("one"), running("two")
    for _ in range(5):
        outcomes = race([_attach(owner, first, data), _attach(owner, second, data)])
        won = [o for o in outcomes if isinstance(o, Attachment)]
        lost = [o for o in outcomes if isinstance(o, Conflict)]
        assert (len(won), len(lost)) == (1, 1), outcomes
        assert (lost[0].status, lost[0].code) == (409, "volume-unavailable")
        assert list(Attachment.objects.values_list("instance_id", flat=True)) == [won[0].instance_id]
        data.refresh_from_db()
        assert data.state == "attaching"
        assert [h.holder for h in data.holders.all()] == [str(won[0].instance.uuid)]
        # The hot-plug failed: the volume is available again for the next round.
        attachments.attach_settle(won[0].pk, ok=False, message="next round")


def test_volumes_attached_to_one_instance_at_once_get_distinct_devices(owner, running, volume):
    instance = running("vm")
    volumes = [volume(f"v{n}") for n in range(6)]
    outcomes = race([_attach(owner, instance, v) for v in volumes])
    assert all(isinstance(o, Attachment) for o in outcomes), outcomes
    assert sorted(Attachment.objects.values_list("device", flat=True)) == ["vdb", "vdc", "vdd", "vde", "vdf", "vdg"]
