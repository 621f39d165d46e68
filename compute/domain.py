"""libvirt domain XML for an instance, built from typed specs. Pure: no libvirt, no database, no files.

The worker fills a :class:`DomainSpec` from the instance (type, disks, lease, seed ISO) and hands the XML from
:func:`domain_xml` to :func:`compute.hypervisor.domain_define`. Specs check their own shape when built, so a
spec that exists always renders to XML that libvirt's schema accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from uuid import UUID

from lxml import etree
from lxml.builder import E

if TYPE_CHECKING:
    from storage.sources import VolumeSource

DiskSource = Literal["file", "iscsi"]
DiskBus = Literal["virtio", "scsi", "ide", "sata"]
DiskFormat = Literal["qcow2", "raw"]
DiskDevice = Literal["disk", "cdrom"]

_TARGET_DEV = re.compile(r"^(vd|sd|hd)[a-z]{1,2}$")
# What a guest may see as a disk's serial (virtio-blk keeps 20 bytes): /dev/disk/by-id/virtio-<serial>.
_SERIAL = re.compile(r"^[A-Za-z0-9_-]{1,20}$")
_CHAP_USER = re.compile(r"^[\x21-\x7e]{1,255}$")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
# Device names as each bus calls them; libvirt derives the controller and unit from the name.
_BUS_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}
# Where the seed ISO goes on each bus: far from the first letters, which the root and data disks take.
_SEED_TARGET = {"ide": "hdd", "scsi": "sdz", "sata": "sdz"}


@dataclass(frozen=True)
class DiskSpec:
    """One disk: a file (``path``) or an iSCSI LUN (``iqn``, ``lun`` on ``host``:``port``).

    An iSCSI LUN behind CHAP names the ``chap_username`` and the libvirt secret (``chap_secret_uuid``) that holds the
    password; ``serial`` is what the guest sees as the disk's serial number."""

    target: str
    source: DiskSource = "file"
    path: str | None = None
    iqn: str | None = None
    lun: int = 1
    host: str | None = None
    port: int = 3260
    bus: DiskBus = "virtio"
    format: DiskFormat = "qcow2"
    readonly: bool = False
    device: DiskDevice = "disk"
    serial: str | None = None
    chap_username: str | None = None
    chap_secret_uuid: UUID | None = None

    def __post_init__(self) -> None:
        if not _TARGET_DEV.match(self.target) or not self.target.startswith(_BUS_PREFIX[self.bus]):
            raise ValueError(f"disk target {self.target!r} is not a device name on the {self.bus} bus")
        if self.source == "file":
            if not self.path or not self.path.startswith("/"):
                raise ValueError(f"file disk {self.target} needs an absolute path")
        elif not (self.iqn and self.host and self.lun >= 0 and 0 < self.port < 65536):
            raise ValueError(f"iSCSI disk {self.target} needs an IQN, a LUN, a host and a port")
        if self.device == "cdrom" and (self.bus == "virtio" or not self.readonly):
            raise ValueError(f"cdrom {self.target} must be read-only on an ide, sata or scsi bus")
        if self.serial is not None and not _SERIAL.match(self.serial):
            raise ValueError(f"disk serial {self.serial!r} is not 1 to 20 letters, digits, _ or -")
        if (self.chap_username is None) != (self.chap_secret_uuid is None):
            raise ValueError(f"CHAP on disk {self.target} needs both a user name and a secret")
        if self.chap_username is not None and (self.source != "iscsi" or not _CHAP_USER.match(self.chap_username)):
            raise ValueError(f"CHAP on disk {self.target} needs an iSCSI source and a printable user name")


@dataclass(frozen=True)
class NicSpec:
    """A NIC on a host bridge with the lease's MAC address."""

    bridge: str
    mac: str
    model: str = "virtio"

    def __post_init__(self) -> None:
        if not _MAC.match(self.mac):
            raise ValueError(f"MAC address {self.mac!r} is not six lower-case hex pairs")
        if not self.bridge:
            raise ValueError("a NIC needs a bridge")


@dataclass(frozen=True)
class DomainSpec:
    """A whole domain. ``kernel`` (with optional ``initrd``, ``cmdline``) boots directly, else the first disk.

    ``seed_iso`` is the cloud-init NoCloud ISO, attached read-only as a cdrom on ``seed_bus``;
    ``console_log`` is the file that receives the serial console."""

    name: str
    uuid: UUID
    vcpus: int
    ram_mib: int
    console_log: str
    disks: tuple[DiskSpec, ...] = ()
    nic: NicSpec | None = None
    seed_iso: str | None = None
    seed_bus: Literal["ide", "scsi", "sata"] = "ide"
    domain_type: Literal["qemu", "kvm"] = "qemu"
    arch: str = "x86_64"
    machine: str = "pc"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", self.name):
            raise ValueError(f"domain name {self.name!r} has characters other than letters, digits, _ . -")
        if self.vcpus < 1 or self.ram_mib < 1:
            raise ValueError("a domain needs at least one vCPU and one MiB of RAM")
        if not self.console_log.startswith("/"):
            raise ValueError("the console log needs an absolute path")
        targets = [disk.target for disk in self.disks] + ([_SEED_TARGET[self.seed_bus]] if self.seed_iso else [])
        if len(set(targets)) != len(targets):
            raise ValueError(f"two disks share a target device: {sorted(targets)}")
        if (self.initrd or self.cmdline) and not self.kernel:
            raise ValueError("an initrd or a kernel command line needs a kernel")
        if not self.kernel and not self.disks:
            raise ValueError("a domain needs a kernel or a disk to boot from")


def _disk(disk: DiskSpec) -> etree._Element:
    if disk.source == "file":
        element = E.disk(
            E.driver(name="qemu", type=disk.format),
            E.source(file=disk.path or ""),
            type="file",
            device=disk.device,
        )
    else:
        source = E.source(
            E.host(name=disk.host or "", port=str(disk.port)), protocol="iscsi", name=f"{disk.iqn}/{disk.lun}"
        )
        if disk.chap_username is not None:
            source.append(E.auth(E.secret(type="iscsi", uuid=str(disk.chap_secret_uuid)), username=disk.chap_username))
        element = E.disk(E.driver(name="qemu", type=disk.format), source, type="network", device=disk.device)
    element.append(E.target(dev=disk.target, bus=disk.bus))
    if disk.readonly:
        element.append(E.readonly())
    if disk.serial:
        element.append(E.serial(disk.serial))
    return element


def disk_xml(disk: DiskSpec) -> str:
    """The ``<disk>`` element of ``disk`` alone, as hot-plugging it (``attachDeviceFlags``) takes it."""
    return etree.tostring(_disk(disk), encoding="unicode")


def volume_disk(
    source: VolumeSource, *, target: str, serial: str | None = None, chap_secret_uuid: UUID | None = None
) -> DiskSpec:
    """The disk for a storage volume as storage describes it (file or iSCSI LUN), on the virtio bus at ``target``;
    a static volume is read-only. ``chap_secret_uuid`` names the libvirt secret holding the CHAP password, which
    the caller defines on the host; the password itself never enters the domain XML."""
    read_only = source.read_only
    if source.backend == "file":
        return DiskSpec(
            target=target, path=source.path, format=_format(source.format), readonly=read_only, serial=serial
        )
    if source.backend != "iscsi":
        raise ValueError(f"volume backend {source.backend!r} is neither file nor iscsi")
    host, _, port = (source.portal or "").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"iSCSI portal {source.portal!r} is not host:port")
    chap = source.chap_username if source.chap_secret else None
    if chap is not None and chap_secret_uuid is None:
        raise ValueError(f"iSCSI volume {source.iqn} uses CHAP: name the libvirt secret that holds its password")
    return DiskSpec(
        target=target,
        source="iscsi",
        iqn=source.iqn,
        lun=source.lun if source.lun is not None else 1,
        host=host.strip("[]"),
        port=int(port),
        format=_format(source.format),
        readonly=read_only,
        serial=serial,
        chap_username=chap,
        chap_secret_uuid=chap_secret_uuid if chap is not None else None,
    )


def _format(value: str) -> DiskFormat:
    if value not in ("qcow2", "raw"):
        raise ValueError(f"disk format {value!r} is neither qcow2 nor raw")
    return "qcow2" if value == "qcow2" else "raw"


def _os(spec: DomainSpec) -> etree._Element:
    os = E.os(E.type("hvm", arch=spec.arch, machine=spec.machine))
    if spec.kernel:
        os.append(E.kernel(spec.kernel))
        if spec.initrd:
            os.append(E.initrd(spec.initrd))
        if spec.cmdline:
            os.append(E.cmdline(spec.cmdline))
    else:
        os.append(E.boot(dev="hd"))
    return os


def domain_xml(spec: DomainSpec) -> str:
    """The libvirt domain XML for ``spec``: ACPI on (so shutdown works), serial console to ``console_log``."""
    disks = list(spec.disks)
    if spec.seed_iso:
        disks.append(
            DiskSpec(
                target=_SEED_TARGET[spec.seed_bus],
                path=spec.seed_iso,
                bus=spec.seed_bus,
                format="raw",
                readonly=True,
                device="cdrom",
            )
        )
    devices = E.devices(*(_disk(disk) for disk in disks))
    if any(disk.bus == "scsi" for disk in disks):
        devices.append(E.controller(type="scsi", index="0", model="virtio-scsi"))
    if spec.nic:
        devices.append(
            E.interface(
                E.source(bridge=spec.nic.bridge),
                E.mac(address=spec.nic.mac),
                E.model(type=spec.nic.model),
                type="bridge",
            )
        )
    devices.append(E.serial(E.source(path=spec.console_log, append="on"), E.target(port="0"), type="file"))
    devices.append(
        E.console(E.source(path=spec.console_log, append="on"), E.target(type="serial", port="0"), type="file")
    )
    domain = E.domain(
        E.name(spec.name),
        E.uuid(str(spec.uuid)),
        E.memory(str(spec.ram_mib), unit="MiB"),
        E.vcpu(str(spec.vcpus)),
        _os(spec),
        E.features(E.acpi()),
        E.on_poweroff("destroy"),
        E.on_reboot("restart"),
        E.on_crash("destroy"),
        devices,
        type=spec.domain_type,
    )
    return etree.tostring(domain, pretty_print=True, encoding="unicode")
