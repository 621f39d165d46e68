"""Races on PostgreSQL: whatever arrives at the same moment, a persistent volume has one holder, quotas hold, and
a volume is never deleted while a VM takes it."""

from __future__ import annotations

import pytest
from django.db import connection

from accounts.quotas import QuotaExceeded, quota_set
from core.errors import Conflict
from storage import services
from storage.models import Volume, VolumeHolder
from tests.race import race

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def closing(call):
    def run():
        try:
            return call()
        finally:
            connection.close()

    return run


@pytest.fixture
def volume(volume_settings, owner, project):
    made = services.volume_create(actor=owner, project=project, name="shared", size_gib=1)
    return services.volume_provision(volume_id=made.pk)


def test_of_many_concurrent_attaches_of_a_persistent_volume_exactly_one_wins(volume, owner, project):
    attaches = [
        closing(
            lambda n=n: services.volume_attach_begin(
                actor=owner, project=project, volume_id=str(volume.uuid), holder=f"vm-{n}"
            )
        )
        for n in range(8)
    ]

    outcomes = race(attaches)

    won = [o for o in outcomes if not isinstance(o, Exception)]
    lost = [o for o in outcomes if isinstance(o, Exception)]
    assert len(won) == 1, lost
    assert all(isinstance(o, Conflict) and o.code == "volume-unavailable" for o in lost), lost
    assert VolumeHolder.objects.count() == 1
    assert Volume.objects.get(pk=volume.pk).state == "attaching"


def test_delete_racing_attach_leaves_either_a_held_volume_or_a_deleted_one(volume, owner, project):
    outcomes = race(
        [
            closing(lambda: services.volume_delete(actor=owner, volume=volume)),
            closing(
                lambda: services.volume_attach_begin(
                    actor=owner, project=project, volume_id=str(volume.uuid), holder="vm-1"
                )
            ),
        ]
    )

    deleted, attached = (not isinstance(o, Exception) for o in outcomes)
    assert deleted != attached, outcomes
    state = Volume.objects.get(pk=volume.pk).state
    holders = VolumeHolder.objects.count()
    assert (state, holders) == (("deleting", 0) if deleted else ("attaching", 1))


def test_concurrent_requests_never_exceed_the_volume_quota(volume_settings, owner, project, staff):
    quota_set(actor=staff, project=project, limits={"volumes": 5, "volume_gib": 100})
    requests = [
        closing(lambda n=n: services.volume_create(actor=owner, project=project, name=f"v{n}", size_gib=10))
        for n in range(12)
    ]

    outcomes = race(requests)

    assert sum(not isinstance(o, Exception) for o in outcomes) == 5
    assert all(isinstance(o, QuotaExceeded) for o in outcomes if isinstance(o, Exception))
    assert Volume.objects.count() == 5


def test_concurrent_static_attaches_all_hold_and_the_last_release_frees_it(disk_image, volume_settings, owner, project):
    """Static volumes are shared: many VMs attach and leave at once; the state follows the holders exactly."""
    from marketplace.models import Image

    image = Image.objects.get(identifier=disk_image)
    volume = services.volume_create(actor=owner, project=project, name="p", size_gib=None, kind="static", image=image)
    Volume.objects.filter(pk=volume.pk).update(state="available")  # its copy is not needed here
    uid = str(volume.uuid)

    begun = race(
        [
            closing(
                lambda n=n: services.volume_attach_begin(actor=owner, project=project, volume_id=uid, holder=f"vm-{n}")
            )
            for n in range(6)
        ]
    )
    assert not [o for o in begun if isinstance(o, Exception)], begun
    race([closing(lambda n=n: services.volume_attach_end(volume_id=uid, holder=f"vm-{n}", ok=True)) for n in range(6)])
    assert VolumeHolder.objects.filter(state="attached").count() == 6
    assert Volume.objects.get(pk=volume.pk).state == "in-use"

    race([closing(lambda n=n: services.volumes_release(holder=f"vm-{n}")) for n in range(6)])

    assert VolumeHolder.objects.count() == 0
    assert Volume.objects.get(pk=volume.pk).state == "available"
