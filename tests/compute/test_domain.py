"""Domain XML from specs: every shape passes libvirt's schema and defines on the test driver."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import replace

import pytest
from lxml import etree

from compute import hypervisor
from compute.domain import DiskSpec, DomainSpec, NicSpec, disk_xml, domain_xml, volume_disk
from storage.sources import VolumeSource

IQN = "iqn.2026-11.org.example:3f0c9d8e"


@pytest.fixture(autouse=True)
def _fresh_connections():
    yield
    hypervisor.disconnect_all()


def _spec(**overrides) -> DomainSpec:
    fields = {
        "name": "vm-1",
        "uuid": uuid.UUID("6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
        "vcpus": 2,
        "ram_mib": 1536,
        "console_log": "/var/log/alto/vm-1.log",
        "disks": (DiskSpec(target="vda", path="/var/lib/alto/vm-1/root.qcow2"),),
    }
    return DomainSpec(**(fields | overrides))


FULL = _spec(
    disks=(
        DiskSpec(target="vda", path="/var/lib/alto/vm-1/root.qcow2"),
        DiskSpec(target="vdb", path="/var/lib/alto/vm-1/swap.img", format="raw"),
        DiskSpec(target="vdc", source="iscsi", iqn=IQN, lun=1, host="127.0.0.1", port=3260, format="raw"),
        DiskSpec(target="sda", path="/var/lib/alto/static.img", bus="scsi", format="raw", readonly=True),
    ),
    nic=NicSpec(bridge="br-public", mac="52:54:00:12:34:56"),
    seed_iso="/var/lib/alto/vm-1/seed.iso",
)
KERNEL_BOOT = _spec(
    disks=(),
    kernel="/var/cache/alto/vmlinuz",
    initrd="/var/cache/alto/initrd.gz",
    cmdline="console=ttyS0 panic=-1",
    seed_iso="/var/lib/alto/vm-1/seed.iso",
)
SHAPES = {
    "one-disk": _spec(),
    "full": FULL,
    "kernel-boot": KERNEL_BOOT,
    "seed-on-scsi": _spec(seed_iso="/s.iso", seed_bus="scsi"),
    "seed-on-sata-q35": _spec(seed_iso="/s.iso", seed_bus="sata", machine="q35"),
    "cdrom-disk": _spec(
        disks=(DiskSpec(target="hdc", path="/i.iso", bus="ide", format="raw", readonly=True, device="cdrom"),)
    ),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_passes_libvirts_schema(shape, tmp_path):
    path = tmp_path / "domain.xml"
    path.write_text(domain_xml(SHAPES[shape]))
    checked = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr + checked.stdout


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_defines_on_the_test_driver(shape):
    hypervisor.domain_define("test:///default", domain_xml(SHAPES[shape]))
    assert hypervisor.domain_state("test:///default", "vm-1") == hypervisor.SHUT_OFF


def _parsed(spec: DomainSpec) -> etree._Element:
    return etree.fromstring(domain_xml(spec))


def test_identity_size_and_tcg_come_from_the_spec():
    domain = _parsed(_spec())
    assert domain.get("type") == "qemu"
    assert domain.findtext("name") == "vm-1"
    assert domain.findtext("uuid") == "6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    assert (domain.findtext("vcpu"), domain.findtext("memory"), domain.find("memory").get("unit")) == (
        "2",
        "1536",
        "MiB",
    )
    ostype = domain.find("os/type")
    assert (ostype.text, ostype.get("arch"), ostype.get("machine")) == ("hvm", "x86_64", "pc")
    assert domain.find("os/boot").get("dev") == "hd"


def test_acpi_is_on_so_that_shutdown_reaches_the_guest():
    domain = _parsed(_spec())
    assert domain.find("features/acpi") is not None
    assert domain.findtext("on_poweroff") == "destroy"


def test_serial_console_writes_to_the_log_file():
    domain = _parsed(_spec())
    for kind in ("serial", "console"):
        element = domain.find(f"devices/{kind}")
        assert element.get("type") == "file"
        assert element.find("source").get("path") == "/var/log/alto/vm-1.log"
    assert domain.find("devices/console/target").get("type") == "serial"


def test_file_disks_carry_format_bus_and_read_only():
    disks = _parsed(FULL).findall("devices/disk")
    root, swap, _iscsi, static, _seed = disks
    assert (root.get("type"), root.find("driver").get("type"), root.find("source").get("file")) == (
        "file",
        "qcow2",
        "/var/lib/alto/vm-1/root.qcow2",
    )
    assert root.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    assert root.find("readonly") is None
    assert swap.find("driver").get("type") == "raw"
    assert static.find("target").attrib == {"dev": "sda", "bus": "scsi"}
    assert static.find("readonly") is not None


def test_a_scsi_disk_brings_a_virtio_scsi_controller():
    assert _parsed(FULL).find("devices/controller[@type='scsi']").get("model") == "virtio-scsi"
    assert _parsed(_spec()).find("devices/controller") is None


def test_an_iscsi_disk_names_the_target_lun_and_portal():
    iscsi = _parsed(FULL).findall("devices/disk")[2]
    assert iscsi.get("type") == "network"
    source = iscsi.find("source")
    assert (source.get("protocol"), source.get("name")) == ("iscsi", f"{IQN}/1")
    assert source.find("host").attrib == {"name": "127.0.0.1", "port": "3260"}


def test_the_seed_iso_is_a_read_only_cdrom():
    seed = _parsed(FULL).findall("devices/disk")[-1]
    assert seed.get("device") == "cdrom"
    assert seed.find("source").get("file") == "/var/lib/alto/vm-1/seed.iso"
    assert seed.find("driver").get("type") == "raw"
    assert seed.find("target").attrib == {"dev": "hdd", "bus": "ide"}
    assert seed.find("readonly") is not None


def test_the_nic_is_on_the_bridge_with_the_leases_mac():
    nic = _parsed(FULL).find("devices/interface")
    assert nic.get("type") == "bridge"
    assert nic.find("source").get("bridge") == "br-public"
    assert nic.find("mac").get("address") == "52:54:00:12:34:56"
    assert nic.find("model").get("type") == "virtio"


def test_direct_kernel_boot_names_kernel_initrd_and_command_line():
    os = _parsed(KERNEL_BOOT).find("os")
    assert os.findtext("kernel") == "/var/cache/alto/vmlinuz"
    assert os.findtext("initrd") == "/var/cache/alto/initrd.gz"
    assert os.findtext("cmdline") == "console=ttyS0 panic=-1"
    assert os.find("boot") is None


def test_text_is_escaped_not_templated():
    domain = _parsed(_spec(kernel="/k", cmdline="a=<b> & 'c'"))
    assert domain.findtext("os/cmdline") == "a=<b> & 'c'"


@pytest.mark.parametrize(
    "build",
    [
        lambda: DiskSpec(target="vda", path="relative.qcow2"),
        lambda: DiskSpec(target="sda", path="/d.img"),
        lambda: DiskSpec(target="vda", source="iscsi", host="127.0.0.1"),
        lambda: DiskSpec(target="vda", path="/i.iso", device="cdrom", readonly=True),
        lambda: DiskSpec(target="hdc", path="/i.iso", bus="ide", device="cdrom"),
        lambda: NicSpec(bridge="br0", mac="52:54:00:12:34"),
        lambda: _spec(name="vm 1; rm"),
        lambda: _spec(vcpus=0),
        lambda: _spec(console_log="vm.log"),
        lambda: _spec(disks=(DiskSpec(target="vda", path="/a"), DiskSpec(target="vda", path="/b"))),
        lambda: _spec(cmdline="console=ttyS0"),
        lambda: _spec(disks=()),
    ],
    ids=[
        "relative-path",
        "name-off-its-bus",
        "iscsi-without-iqn",
        "virtio-cdrom",
        "writable-cdrom",
        "short-mac",
        "bad-name",
        "no-vcpu",
        "relative-log",
        "same-target-twice",
        "cmdline-without-kernel",
        "nothing-to-boot",
    ],
)
def test_a_spec_of_the_wrong_shape_is_refused_when_built(build):
    with pytest.raises(ValueError):
        build()


def test_specs_are_frozen():
    with pytest.raises(AttributeError):
        _spec().name = "other"  # type: ignore[misc]


# --- Disks of storage volumes (storage.sources.VolumeSource → DiskSpec) -------------------------------------

VOLUME = "3f0c9d8e4b5a6c7d8e9f"
SECRET = uuid.UUID("0d6a4f4e-5b1c-4f2a-9c3d-2e1f0a9b8c7d")
FILE_SOURCE = VolumeSource(backend="file", format="qcow2", read_only=False, path="/srv/volumes/3f0c.qcow2")
STATIC_SOURCE = VolumeSource(backend="file", format="raw", read_only=True, path="/srv/volumes/static.raw")
ISCSI_SOURCE = VolumeSource(
    backend="iscsi", format="raw", read_only=False, portal="192.0.2.10:3260", iqn=IQN, lun=1,
    chap_username="alto-3f0c", chap_secret="s3cret-never-in-xml",
)  # fmt: skip
VOLUME_SHAPES = {
    "file": volume_disk(FILE_SOURCE, target="vdb", serial=VOLUME),
    "static": volume_disk(STATIC_SOURCE, target="vdc", serial=VOLUME),
    "iscsi-chap": volume_disk(ISCSI_SOURCE, target="vdd", serial=VOLUME, chap_secret_uuid=SECRET),
    "iscsi": volume_disk(replace(ISCSI_SOURCE, chap_username=None, chap_secret=None), target="vde"),
}


@pytest.mark.parametrize("shape", VOLUME_SHAPES)
def test_every_volume_disk_passes_libvirts_schema_in_a_domain(shape, tmp_path):
    path = tmp_path / "domain.xml"
    path.write_text(domain_xml(_spec(disks=(DiskSpec(target="vda", path="/r.qcow2"), VOLUME_SHAPES[shape]))))
    checked = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr + checked.stdout


def test_a_file_volume_is_a_file_disk_with_its_serial():
    disk = etree.fromstring(disk_xml(VOLUME_SHAPES["file"]))
    assert (disk.get("type"), disk.find("source").get("file"), disk.find("driver").get("type")) == (
        "file",
        "/srv/volumes/3f0c.qcow2",
        "qcow2",
    )
    assert disk.find("target").attrib == {"dev": "vdb", "bus": "virtio"}
    assert disk.findtext("serial") == VOLUME
    assert disk.find("readonly") is None


def test_a_static_volume_is_read_only():
    assert etree.fromstring(disk_xml(VOLUME_SHAPES["static"])).find("readonly") is not None


def test_an_iscsi_volume_names_portal_target_and_lun_and_its_chap_secret_by_uuid_only():
    xml = disk_xml(VOLUME_SHAPES["iscsi-chap"])
    disk = etree.fromstring(xml)
    source = disk.find("source")
    assert (disk.get("type"), source.get("protocol"), source.get("name")) == ("network", "iscsi", f"{IQN}/1")
    assert source.find("host").attrib == {"name": "192.0.2.10", "port": "3260"}
    assert source.find("auth").get("username") == "alto-3f0c"
    assert source.find("auth/secret").attrib == {"type": "iscsi", "uuid": str(SECRET)}
    assert "s3cret" not in xml
    assert etree.fromstring(disk_xml(VOLUME_SHAPES["iscsi"])).find("source/auth") is None


@pytest.mark.parametrize(
    "build",
    [
        lambda: volume_disk(ISCSI_SOURCE, target="vdb"),
        lambda: volume_disk(replace(ISCSI_SOURCE, portal="no-port"), target="vdb", chap_secret_uuid=SECRET),
        lambda: volume_disk(replace(FILE_SOURCE, backend="nfs"), target="vdb"),
        lambda: volume_disk(replace(FILE_SOURCE, format="vmdk"), target="vdb"),
        lambda: volume_disk(FILE_SOURCE, target="vdb", serial="has space"),
        lambda: volume_disk(FILE_SOURCE, target="vdb", serial="x" * 21),
        lambda: volume_disk(replace(FILE_SOURCE, path="relative.qcow2"), target="vdb"),
        lambda: volume_disk(FILE_SOURCE, target="sdb"),
    ],
    ids=["chap-without-secret", "portal-without-port", "unknown-backend", "unknown-format", "serial-space",
         "serial-too-long", "relative-path", "not-virtio"],
)  # fmt: skip
def test_a_volume_source_of_the_wrong_shape_is_refused(build):
    with pytest.raises(ValueError):
        build()
