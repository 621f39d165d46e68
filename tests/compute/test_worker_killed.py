"""A worker killed with SIGKILL in the middle of prepare: after a restart the instance still ends ``running``,
and nothing is allocated twice (one lease, its size counted once on its host and in the quota, one cached image,
one download that completed).

Real parts only: a real worker process on the configured broker (the filesystem broker, or Redis in the
production pass), the image served by a real HTTP server in this test, which sends half the image and stalls so
that the worker is caught downloading, the libvirt test driver host of a node file, real qemu-img."""

from __future__ import annotations

import os
import shutil
import time
import uuid

import pytest

from accounts.quotas import quota_usage
from compute import scheduler
from compute.models import Host, Instance, Lease
from core.models import AuditEntry
from marketplace import metadata
from marketplace import services as marketplace_services
from marketplace.models import Image
from storage.models import CachedImage
from tests.compute.test_hypervisor import NODE
from tests.marketplace.conftest import T0
from tests.storage.conftest import Route, checksums_of, image_server  # noqa: F401 - the image server fixture

pytestmark = [
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
]

# The restarted worker takes over the dead worker's download claim once it is stale: the download deadline
# (IMAGE_DOWNLOAD_TIMEOUT, short here) plus storage.images.STALE_GRACE_SECONDS (60 s).
DOWNLOAD_TIMEOUT_SECONDS = 10  # room for the test to see the download begin and kill the worker within it
DEADLINE_SECONDS = 240


def _wait(what, deadline: float, describe) -> None:
    while not what():
        assert time.monotonic() < deadline, describe()
        time.sleep(0.25)


@pytest.fixture
def stalled_image(owner, registered, keyring, image_server):  # noqa: F811 - fixtures from the conftests
    """A signed machine image whose only location is on the test's HTTP server, which for now sends half of it
    and stalls. Returns (image, path on the server, content)."""
    registered(owner, "owner")
    content = os.urandom(256 * 1024)
    path = f"/c10f-{uuid.uuid4().hex}.raw"
    url = image_server.serve(path, Route(body=content, stall=True))
    document = metadata.build(
        image_bytes=len(content),
        checksums=checksums_of(content),
        type="base",
        title="Killed-worker image",
        os="Ubuntu",
        os_arch="x86_64",
        kind="machine",
        format="raw",
        compression="",
        locations=(url,),
    )
    entry = marketplace_services.entry_upload(raw=keyring["owner"].sign(document, now=T0), uploader=owner)
    return Image.objects.get(pk=entry.image.pk), path, content


def test_an_instance_whose_worker_is_killed_during_prepare_runs_after_a_restart_with_nothing_allocated_twice(
    celery_workers,
    image_server,  # noqa: F811 - the fixture imported above
    stalled_image,
    project,
    networks,
    micro_request,
    tmp_path,
):
    image, path, content = stalled_image
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    host = Host.objects.create(name=f"c10f-kill-{uuid.uuid4().hex[:8]}", uri=f"test://{node}", vcpus=4, ram_mib=8192)
    cache = tmp_path / "image-cache"
    env = {
        "IMAGE_CACHE_DIR": str(cache),
        "INSTANCE_DIR": str(tmp_path / "instances"),
        "QUARANTINE_DIR": str(tmp_path / "quarantine"),
        "IMAGE_DOWNLOAD_TIMEOUT": str(DOWNLOAD_TIMEOUT_SECONDS),
    }
    worker = celery_workers("c10f-killed", queues=f"host.{host.name}", env=env)
    room_before = {room.instance_type.name: room.fits_now for room in scheduler.capacity()}

    vm = micro_request("survivor", image=image)
    deadline = time.monotonic() + DEADLINE_SECONDS

    def state() -> str:
        return Instance.objects.get(pk=vm.pk).state

    # The worker is in prepare, half-way through the download: kill it there.
    _wait(lambda: image_server.hits[path] == 1, deadline, lambda: f"no download began:\n{worker.log_text()[-3000:]}")
    cached = CachedImage.objects.get(identifier=image.identifier)
    assert (state(), cached.state) == ("preparing", "downloading")
    worker.kill()
    assert state() == "preparing"

    # The server answers in full from now on; the same worker is started again.
    image_server.routes[path] = Route(body=content)
    worker.start()
    _wait(
        lambda: state() in ("running", "error"),
        deadline,
        lambda: f"still {state()}:\n{worker.log_text()[-3000:]}",
    )
    vm.refresh_from_db()
    assert vm.state == "running", f"{vm.state}: {vm.state_message}\n{worker.log_text()[-3000:]}"

    # Nothing twice: one lease (the first), one live instance counted once on its host and in the quota, one
    # cached copy of the image, downloaded once in full after the interrupted attempt.
    assert list(Lease.objects.exclude(instance=None).values_list("instance", "ip")) == [(vm.pk, "10.10.0.2")]
    assert list(Instance.objects.live().filter(host=host).values_list("pk", flat=True)) == [vm.pk]
    room_after = {room.instance_type.name: room.fits_now for room in scheduler.capacity()}
    assert room_after["t1.micro"] == room_before["t1.micro"] - 1
    usage = quota_usage(project=project)
    assert (usage["instances"].used, usage["vcpus"].used, usage["ram_mib"].used) == (1, 1, 512)
    assert CachedImage.objects.filter(identifier=image.identifier, state="ready").count() == 1
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == [image.identifier]
    assert (cache / image.identifier).read_bytes() == content
    assert image_server.hits[path] == 2

    # The audit trail: prepared by the killed worker, taken up again and booted by its restart, once each.
    steps = list(
        AuditEntry.objects.filter(object_id=str(vm.pk), action__startswith="compute.instance.")
        .order_by("pk")
        .values_list("action", "details__worker")
    )
    ran_by = {action: who for action, who in steps}
    assert [action for action, _ in steps] == [
        "compute.instance.requested",
        "compute.instance.preparing",
        "compute.instance.booting",
        "compute.instance.running",
    ]
    assert ran_by["compute.instance.booting"].startswith("c10f-killed@")
