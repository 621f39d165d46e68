"""Disks plugged into and out of domains through the adapter: on libvirt's test driver (the definition), and into a
real running guest under TCG, which reports what it sees on its serial console."""

from __future__ import annotations

import secrets
import time
import uuid

import pytest

from compute import hypervisor
from compute.domain import DiskSpec, DomainSpec, disk_xml, domain_xml
from tests.compute.guest import REAL_GUEST, console_wait
from tests.compute.test_hypervisor import UNREACHABLE

DEFAULT = "test:///default"
DETACH_TIMEOUT = 90


@pytest.fixture(autouse=True)
def _fresh_connections():
    yield
    hypervisor.disconnect_all()


def _domain(name: str = "vm-a", *, start: bool = True) -> str:
    spec = DomainSpec(
        name=name,
        uuid=uuid.uuid4(),
        vcpus=1,
        ram_mib=512,
        console_log=f"/var/log/alto/{name}.log",
        disks=(DiskSpec(target="vda", path=f"/var/lib/alto/{name}.qcow2"),),
    )
    hypervisor.domain_define(DEFAULT, domain_xml(spec))
    if start:
        hypervisor.domain_start(DEFAULT, name)
    return name


DATA = DiskSpec(target="vdb", path="/srv/volumes/data.qcow2", serial="data")


def _targets(uri: str, name: str, *, live: bool = False) -> dict[str, str]:
    return {disk.target: disk.source for disk in hypervisor.domain_disks(uri, name, live=live)}


@pytest.mark.parametrize("running", [True, False], ids=["running", "stopped"])
def test_an_attached_disk_is_in_the_definition_and_attaching_again_is_harmless(running):
    name = _domain(start=running)
    for _ in range(2):
        hypervisor.domain_disk_attach(DEFAULT, name, disk_xml(DATA))
    assert _targets(DEFAULT, name) == {"vda": "/var/lib/alto/vm-a.qcow2", "vdb": "/srv/volumes/data.qcow2"}
    assert _targets(DEFAULT, name, live=True) == (_targets(DEFAULT, name) if running else {})


def test_a_device_holding_another_disk_is_refused_and_kept():
    name = _domain()
    hypervisor.domain_disk_attach(DEFAULT, name, disk_xml(DATA))
    other = DiskSpec(target="vdb", path="/srv/volumes/other.qcow2")
    with pytest.raises(hypervisor.HypervisorRefused, match="vdb .* holds /srv/volumes/data.qcow2"):
        hypervisor.domain_disk_attach(DEFAULT, name, disk_xml(other))
    with pytest.raises(hypervisor.HypervisorRefused):
        hypervisor.domain_disk_detach(DEFAULT, name, target="vdb", source="/srv/volumes/other.qcow2")
    assert _targets(DEFAULT, name)["vdb"] == "/srv/volumes/data.qcow2"


def test_a_detached_disk_is_gone_and_detaching_again_or_from_an_absent_domain_is_harmless():
    name = _domain()
    hypervisor.domain_disk_attach(DEFAULT, name, disk_xml(DATA))
    for _ in range(2):
        assert hypervisor.domain_disk_detach(DEFAULT, name, target="vdb", source=DATA.path) is True
    assert set(_targets(DEFAULT, name)) == {"vda"}
    assert hypervisor.domain_disk_detach(DEFAULT, "nowhere", target="vdb", source=DATA.path) is True


def test_a_disk_the_domain_booted_with_is_detached_too():
    spec = DomainSpec(
        name="vm-b",
        uuid=uuid.uuid4(),
        vcpus=1,
        ram_mib=512,
        console_log="/var/log/alto/vm-b.log",
        disks=(DiskSpec(target="vda", path="/var/lib/alto/vm-b.qcow2"), DATA),
    )
    hypervisor.domain_define(DEFAULT, domain_xml(spec))
    hypervisor.domain_start(DEFAULT, "vm-b")
    assert hypervisor.domain_disk_detach(DEFAULT, "vm-b", target="vdb", source=DATA.path) is True
    assert set(_targets(DEFAULT, "vm-b", live=True)) == set(_targets(DEFAULT, "vm-b")) == {"vda"}


def test_attaching_to_an_absent_domain_is_a_permanent_failure():
    with pytest.raises(hypervisor.DomainAbsent):
        hypervisor.domain_disk_attach(DEFAULT, "nowhere", disk_xml(DATA))


def test_something_other_than_a_disk_is_refused():
    name = _domain()
    with pytest.raises(hypervisor.HypervisorRefused):
        hypervisor.domain_disk_attach(DEFAULT, name, "<interface type='bridge'><source bridge='br0'/></interface>")


@pytest.mark.parametrize(
    ("operation", "args", "kwargs"),
    [
        ("domain_disk_attach", ("vm-a", disk_xml(DATA)), {}),
        ("domain_disk_detach", ("vm-a",), {"target": "vdb", "source": "/d"}),
        ("domain_disks", ("vm-a",), {}),
        ("secret_ensure", (), {"uuid": uuid.uuid4(), "usage": "iqn.x:y", "value": b"pw"}),
        ("secret_remove", (), {"uuid": uuid.uuid4()}),
    ],
)
def test_disk_operations_on_an_unreachable_host_are_transient_failures(operation, args, kwargs):
    with pytest.raises(hypervisor.HostUnreachable):
        getattr(hypervisor, operation)(UNREACHABLE, *args, **kwargs)


# --- A real guest --------------------------------------------------------------------------------------------


def real_guest(test):
    for mark in REAL_GUEST:
        test = mark(test)
    return test


def _volume(tmp_path, marker: str):
    path = tmp_path / f"{marker}.raw"
    path.write_bytes(marker.encode() + bytes(1024 * 1024 - len(marker)))
    return path


@pytest.fixture
def running_guest(libvirt_host, hotplug_guest, tmp_path):
    """A running hot-plug guest on the private libvirtd: (uri, domain name, console log path)."""
    kernel, initrd = hotplug_guest
    console = tmp_path / "console.log"
    name = f"alto-test-{secrets.token_hex(6)}"
    spec = DomainSpec(
        name=name,
        uuid=uuid.uuid4(),
        vcpus=1,
        ram_mib=256,
        console_log=str(console),
        kernel=str(kernel),
        initrd=str(initrd),
        cmdline="console=ttyS0 panic=0 quiet",
    )
    hypervisor.domain_define(libvirt_host, domain_xml(spec))
    hypervisor.domain_start(libvirt_host, name)
    try:
        console_wait(console, "ALTO-READY")
        yield libvirt_host, name, console
    finally:
        hypervisor.domain_destroy(libvirt_host, name)
        hypervisor.domain_undefine(libvirt_host, name)


def _detach(uri: str, name: str, *, target: str, source: str) -> None:
    deadline = time.monotonic() + DETACH_TIMEOUT
    while not hypervisor.domain_disk_detach(uri, name, target=target, source=source):
        assert time.monotonic() < deadline, f"the guest did not release {target} in {DETACH_TIMEOUT} s"
        time.sleep(0.5)


@real_guest
def test_a_running_guest_reads_a_hot_plugged_disk_and_lets_it_go(running_guest, tmp_path):
    uri, name, console = running_guest
    marker = f"ALTO-MARK-{secrets.token_hex(8)}"
    path = _volume(tmp_path, marker)
    disk = DiskSpec(target="vdb", path=str(path), format="raw", serial="s11a-volume")
    for _ in range(2):
        hypervisor.domain_disk_attach(uri, name, disk_xml(disk))
    console_wait(console, f"ALTO-DISK s11a-volume {marker}")
    assert _targets(uri, name, live=True)["vdb"] == str(path)
    assert _targets(uri, name)["vdb"] == str(path)

    _detach(uri, name, target="vdb", source=str(path))
    console_wait(console, "ALTO-GONE s11a-volume")
    assert "vdb" not in _targets(uri, name, live=True)
    assert "vdb" not in _targets(uri, name)
    assert hypervisor.domain_disk_detach(uri, name, target="vdb", source=str(path)) is True


@real_guest
def test_a_disk_the_running_guest_cannot_take_is_left_out_of_the_definition_too(running_guest, tmp_path):
    uri, name, _console = running_guest
    missing = DiskSpec(target="vdc", path=str(tmp_path / "no-such-file.raw"), format="raw")
    # libvirt calls a missing file a system error (transient: an NFS mount may come back); either way nothing stays.
    with pytest.raises(hypervisor.HypervisorError, match="no-such-file.raw"):
        hypervisor.domain_disk_attach(uri, name, disk_xml(missing))
    assert "vdc" not in _targets(uri, name)
    assert "vdc" not in _targets(uri, name, live=True)


@real_guest
def test_a_chap_secret_is_defined_replaced_and_removed_on_a_real_host(libvirt_host):
    secret = uuid.uuid4()
    for value in (b"first", b"second"):
        hypervisor.secret_ensure(libvirt_host, uuid=secret, usage=f"iqn.2026-12.org.example:{secret}", value=value)
    for _ in range(2):
        hypervisor.secret_remove(libvirt_host, uuid=secret)
