"""The iSCSI round trip with real parts (issue 11's must-show): a marker written into a persistent volume on a real
tgtd is read by a real guest under TCG after the volume is hot-plugged into it through compute's attach; detached
and attached to a second guest, the marker is still there.

tgtd runs in the private libvirtd's network namespace (the guests' qemu reaches it on that namespace's loopback,
and nothing leaves it); tgtadm reaches it through its control socket, which no namespace hides. CHAP is on, so the
password travels through a libvirt secret on the host. The compute steps are called as the worker would call them.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from compute import attachments, hypervisor
from compute.domain import DomainSpec, domain_xml
from compute.models import Host, Instance
from storage import services as storage_services
from storage.models import Volume
from tests.compute.guest import REAL_GUEST, console_wait
from tests.storage.conftest import Tgtd

pytestmark = [
    *REAL_GUEST,
    pytest.mark.skipif(
        not all(
            shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin") for tool in ("tgtd", "nsenter", "ip", "virsh")
        ),
        reason="needs tgt, util-linux's nsenter, iproute2's ip and virsh (make system-deps installs them)",
    ),
]
DETACH_TIMEOUT = 90


def _namespace(libvirt_uri: str) -> str:
    """The network namespace of the private libvirtd behind ``libvirt_uri`` (its guests live there)."""
    socket = re.search(r"socket=(.*)/run/libvirt-sock", libvirt_uri)
    assert socket, libvirt_uri
    pid = Path(socket.group(1), "libvirtd.pid").read_text().strip()
    return f"/proc/{pid}/ns/net"


@dataclass
class NamespacedTgtd(Tgtd):
    """The storage tests' tgtd, started inside a network namespace: portal 3260 on that namespace's loopback."""

    netns: str = ""

    def start(self) -> None:
        subprocess.run(["nsenter", f"--net={self.netns}", "ip", "link", "set", "lo", "up"], check=True)
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                ["nsenter", f"--net={self.netns}", "tgtd", "-f", "-C", str(self.control_port), "--iscsi",
                 f"portal={self.portal}"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 20
        while self.tgtadm("--mode", "target", "--op", "show", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tgtd did not start:\n{self.log.read_text()}")
            time.sleep(0.1)


@pytest.fixture
def guest_tgtd(libvirt_host, volume_settings, tmp_path_factory):
    import os

    daemon = NamespacedTgtd(
        control_port=31_000 + os.getpid() % 1_700,  # "s11a": apart from the storage tests' 11000-31000
        port=3260,
        log=tmp_path_factory.mktemp("s11a-tgtd") / "tgtd.log",
        netns=_namespace(libvirt_host),
    )
    daemon.start()
    volume_settings.ISCSI_CONTROL_PORT = daemon.control_port
    volume_settings.ISCSI_PORTAL = daemon.portal
    volume_settings.ISCSI_INITIATORS = ["ALL"]
    volume_settings.ISCSI_CHAP = True
    volume_settings.STORAGE_BACKENDS = ["file", "iscsi"]
    try:
        yield daemon
    finally:
        daemon.clear()
        daemon.stop()


@pytest.fixture
def guests(libvirt_host, hotplug_guest, types, instance_on, tmp_path):
    """``guest(name)``: a running instance whose domain is the hot-plug guest on the private libvirtd, and its
    console log."""
    kernel, initrd = hotplug_guest
    host = Host.objects.create(name="qemu", uri=libvirt_host, vcpus=2, ram_mib=4096)
    made: list[Instance] = []

    def guest(name: str) -> tuple[Instance, Path]:
        instance = instance_on(host, types["t1.micro"], state="running", name=name)
        console = tmp_path / f"{name}.log"
        spec = DomainSpec(
            name=f"alto-{instance.uuid}",
            uuid=instance.uuid,
            vcpus=1,
            ram_mib=256,
            console_log=str(console),
            kernel=str(kernel),
            initrd=str(initrd),
            cmdline="console=ttyS0 panic=0 quiet",
        )
        hypervisor.domain_define(libvirt_host, domain_xml(spec))
        hypervisor.domain_start(libvirt_host, spec.name)
        made.append(instance)
        console_wait(console, "ALTO-READY")
        return instance, console

    yield guest
    for instance in made:
        hypervisor.domain_destroy(libvirt_host, f"alto-{instance.uuid}")
        hypervisor.domain_undefine(libvirt_host, f"alto-{instance.uuid}")


def _state(volume: Volume) -> str:
    volume.refresh_from_db()
    return volume.state


def test_a_marker_on_an_iscsi_volume_is_read_by_one_guest_then_by_another(
    owner, project, guests, guest_tgtd, django_capture_on_commit_callbacks
):
    data = storage_services.volume_create(actor=owner, project=project, name="data", size_gib=1, backend="iscsi")
    data = storage_services.volume_provision(volume_id=data.pk)
    assert data.chap_username and data.iqn in guest_tgtd.tgtadm("--mode", "target", "--op", "show").stdout
    marker = f"ALTO-MARK-{secrets.token_hex(8)}"
    with open(data.path, "r+b") as backing:  # what a previous VM wrote
        backing.write(marker.encode())
    serial = data.uuid.hex[:20]
    first, first_console = guests("first")
    second, second_console = guests("second")

    with django_capture_on_commit_callbacks(execute=True):
        attachment = attachments.instance_attach(actor=owner, instance=first, volume_id=str(data.uuid))
    assert attachments.volume_attach_apply(attachment.pk) is True
    assert _state(data) == "in-use"
    console_wait(first_console, f"ALTO-DISK {serial} {marker}")
    # The CHAP password is in a libvirt secret, never in the domain's XML.
    assert (
        data.chap_secret
        not in subprocess.run(
            ["virsh", "-c", first.host.uri, "dumpxml", f"alto-{first.uuid}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )

    with django_capture_on_commit_callbacks(execute=True):
        attachments.instance_detach(actor=owner, instance=first, volume_id=str(data.uuid))
    deadline = time.monotonic() + DETACH_TIMEOUT
    while not attachments.volume_detach_apply(attachment.pk):
        assert time.monotonic() < deadline, f"the first guest did not release the volume in {DETACH_TIMEOUT} s"
        time.sleep(0.5)
    console_wait(first_console, f"ALTO-GONE {serial}")
    assert _state(data) == "available"

    with django_capture_on_commit_callbacks(execute=True):
        again = attachments.instance_attach(actor=owner, instance=second, volume_id=str(data.uuid))
    assert attachments.volume_attach_apply(again.pk) is True
    console_wait(second_console, f"ALTO-DISK {serial} {marker}")
    assert _state(data) == "in-use"
