"""A worker killed with SIGKILL in the middle of a hot-plug leaves no volume stuck in ``attaching``: reconciliation
settles it from the domain's definition, ``in-use`` (the disk is there) or ``available`` (it is not).

The worker is a real Celery process and the host a real libvirtd (the real-guest session's), frozen with SIGSTOP
while the task talks to it, so the kill lands inside the step; the daemon is let go after the kill. The session's
worker is paused meanwhile: only the worker under test consumes the host's queue."""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from compute import attachments, hypervisor
from compute.domain import DiskSpec, DomainSpec, domain_xml
from compute.models import Attachment, Host
from storage import services as storage_services
from tests.compute.guest import REAL_GUEST

pytestmark = [*REAL_GUEST, pytest.mark.worker, pytest.mark.django_db(transaction=True)]
WAIT_SECONDS = 60


def _wait_for(path: Path, pattern: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not re.search(pattern, path.read_text()):
        assert time.monotonic() < deadline, f"no {pattern!r} in the worker log:\n{path.read_text()[-3000:]}"
        time.sleep(0.2)


def _libvirtd_pid(uri: str) -> int:
    socket = re.search(r"socket=(.*)/run/libvirt-sock", uri)
    assert socket, uri
    return int(Path(socket.group(1), "libvirtd.pid").read_text().strip())


def test_a_worker_killed_during_attach_leaves_the_volume_in_use_or_available(
    celery_workers, libvirt_host, owner, project, types, instance_on, volume_settings, tmp_path
):
    host = Host.objects.create(name=f"s11a-{uuid.uuid4().hex[:8]}", uri=libvirt_host, vcpus=2, ram_mib=4096)
    instance = instance_on(host, types["t1.micro"], state="stopped")
    name = f"alto-{instance.uuid}"
    disks = (DiskSpec(target="vda", path=str(tmp_path / "root.qcow2")),)
    spec = DomainSpec(name=name, uuid=instance.uuid, vcpus=1, ram_mib=256, console_log=str(tmp_path / "c.log"),
                      disks=disks)  # fmt: skip
    hypervisor.domain_define(libvirt_host, domain_xml(spec))
    made = storage_services.volume_create(actor=owner, project=project, name="data", size_gib=1)
    volume = storage_services.volume_provision(volume_id=made.pk)

    # The only worker consuming the host's queue: the one killed here takes the step.
    worker = celery_workers(f"s11a-killed-{uuid.uuid4().hex[:6]}", queues=f"host.{host.name}")
    libvirtd = _libvirtd_pid(libvirt_host)
    try:
        os.kill(libvirtd, signal.SIGSTOP)
        attachment = attachments.instance_attach(actor=owner, instance=instance, volume_id=str(volume.uuid))
        _wait_for(worker.log, r"Task compute\.volume_attach\[[^\]]+\] received")
        time.sleep(1.5)  # the step is waiting on the frozen daemon
        worker.kill()
    finally:
        os.kill(libvirtd, signal.SIGCONT)
    volume.refresh_from_db()
    assert volume.state == "attaching"  # the kill did land inside the step

    settled = attachments.attachments_settle(host_id=host.pk, now=timezone.now() + timedelta(minutes=31))
    assert [s.attachment for s in settled] == [attachment.pk]
    volume.refresh_from_db()
    in_definition = {d.target: d.source for d in hypervisor.domain_disks(libvirt_host, name)}.get("vdb")
    if volume.state == "in-use":
        assert Attachment.objects.get(pk=attachment.pk).state == "attached"
        assert in_definition == volume.path
    else:
        assert volume.state == "available"
        assert not Attachment.objects.filter(pk=attachment.pk).exists()
        assert in_definition is None
    hypervisor.domain_undefine(libvirt_host, name)
