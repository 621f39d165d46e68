"""A real libvirtd for qemu:///system and a tiny bootable guest, shared by the real-guest tests (fixtures
``libvirt_daemon``, ``libvirt_host``, ``tiny_guest``, ``guest_disk``, ``hotplug_guest``; registered in
tests/compute/conftest.py), and ``console_wait``.

The session starts a private libvirtd (RUNBOOK.md): in its own mount and network namespaces, with
``/run/libvirt``, ``/var/lib/libvirt``, ``/etc/libvirt``, ``/var/log/libvirt`` and ``/var/cache/libvirt`` bound to a
temporary directory, so it neither sees nor disturbs another daemon on the machine and its guests can send no
packets. We reach it through its socket: ``qemu+unix:///system?socket=<tmp>/run/libvirt-sock``.

The guest is Debian's cloud kernel (downloaded once into ``var/test-guest/``) with an initramfs of
``busybox-static`` whose ``/init`` loads the cdrom and iso9660 modules, mounts the cdrom labelled ``cidata``,
prints the SSH key line of its ``user-data`` to the serial console, turns on the disk labelled ``alto-swap`` as swap
if there is one (``ALTO-SWAP: 1 /dev/vd…``) and, when its kernel command line says
``alto.poweroff``, powers off (else it stays up until it is destroyed). ``guest_disk`` puts the same kernel and
initramfs on a raw disk that boots by itself (a FAT file system with SYSLINUX, written with mtools, no mount),
for tests that boot it as a Marketplace image.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from compute import hypervisor

ROOT = Path(__file__).resolve().parents[2]
GUEST_CACHE = ROOT / "var" / "test-guest"
BUSYBOX = Path("/bin/busybox")
BOOT_TIMEOUT = 120
# What the guest needs to see its seed: the IDE controller of the `pc` machine, the cdrom and its file system; and
# its virtio disks (modules in Debian's cloud kernel, whatever RUNBOOK.md says).
GUEST_MODULES = ("ata_piix", "sr_mod", "isofs", "virtio_pci", "virtio_blk")

_TOOLS = ("libvirtd", "virtlogd", "qemu-system-x86_64", "unshare", "cpio", "apt-get", "apt-cache", "dpkg")
_MISSING = [tool for tool in _TOOLS if not shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")]

# The marks of every real-guest test module.
REAL_GUEST = [
    pytest.mark.qemu,
    pytest.mark.skipif(bool(_MISSING), reason=f"needs {', '.join(_MISSING)} (make system-deps installs them)"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs Debian's busybox-static (make system-deps)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="starts libvirtd for qemu:///system, which needs root"),
]

QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = []
namespaces = []
"""

# What every seeded guest's init starts with: busybox, the kernel's file systems, the modules, and the cloud-init seed
# mounted on /seed (the cdrom whose ISO 9660 volume label, at byte 32808, is cidata; busybox's findfs misses it).
SEEDED_BOOT = r"""#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in MODULES; do insmod /lib/modules/$module.ko; done
for attempt in $(seq 1 200); do
    for device in /dev/sr*; do
        [ -b "$device" ] && [ "$(dd if=$device bs=1 skip=32808 count=6 2>/dev/null)" = cidata ] && break 2
    done
    sleep 0.1
done
mount -t iso9660 -o ro "$device" /seed
"""

INIT = (
    SEEDED_BOOT
    + r"""echo "ALTO-SEED-KEY: $(grep -o 'ssh-[a-z0-9]* [A-Za-z0-9+/=]* [A-Za-z0-9@._-]*' /seed/user-data)"
# A swap disk labelled alto-swap (what cloud-init's mounts would add), turned on as a check that it is swap.
# The label of a Linux swap area is at byte 1052 (after the boot block, version, last page, bad pages and UUID).
for swap in /dev/vd*; do
    if [ "$(dd if=$swap bs=1 skip=1052 count=9 2>/dev/null)" = alto-swap ]; then
        swapon "$swap" && echo "ALTO-SWAP: $(grep -c "^$swap " /proc/swaps) $swap"
    fi
done
grep -q alto.poweroff /proc/cmdline && poweroff -f
while true; do sleep 60; done
"""
)

_DAEMON_DIRS = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "etc": "/etc/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}


def _ensure_libvirt_accounts() -> None:
    """libvirtd refuses to start without the user ``libvirt-qemu``, whatever qemu.conf says (RUNBOOK.md)."""
    for group in ("kvm", "libvirt-qemu"):
        if subprocess.run(["getent", "group", group], capture_output=True, check=False).returncode:
            subprocess.run(["groupadd", "-r", group], check=True)
    if subprocess.run(["id", "libvirt-qemu"], capture_output=True, check=False).returncode:
        subprocess.run(["useradd", "-r", "-g", "libvirt-qemu", "-G", "kvm", "libvirt-qemu"], check=True)


def _stop(pidfile: Path) -> None:
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class LibvirtDaemon:
    """A private libvirtd: its URI and the folder it keeps its state in (``libvirtd.pid`` among it)."""

    uri: str
    base: Path

    def bridge(self, name: str) -> None:
        """A Linux bridge ``name`` in the daemon's network namespace (made once), for the guests' NICs."""
        pid = (self.base / "libvirtd.pid").read_text().strip()
        netns = ["nsenter", f"--net=/proc/{pid}/ns/net"]
        if subprocess.run([*netns, "ip", "link", "show", name], capture_output=True, check=False).returncode:
            subprocess.run([*netns, "ip", "link", "add", name, "type", "bridge"], check=True)
            subprocess.run([*netns, "ip", "link", "set", name, "up"], check=True)


def libvirt_daemon_stop(uri: str, base: Path, *, pid_dirs: tuple[str, ...] = ("run",)) -> None:
    """Stop a test's own libvirtd at ``uri`` (its files under ``base``) and everything it started: its domains, its
    networks (destroying one stops its dnsmasq, which would otherwise outlive the daemon), virtlogd, and whatever
    left a pid file under ``base``'s ``pid_dirs``."""
    # If the daemon is already gone there is nothing left to destroy through it.
    with contextlib.suppress(hypervisor.HypervisorError):
        for domain in hypervisor.domains(uri):
            hypervisor.domain_destroy(uri, domain.name)
        for network in hypervisor.networks(uri):
            hypervisor.network_remove(uri, network)
    hypervisor.disconnect_all()
    _stop(base / "libvirtd.pid")
    _stop(base / "virtlogd.pid")
    for folder in pid_dirs:
        for pidfile in (base / folder).rglob("*.pid"):
            _stop(pidfile)


@pytest.fixture(scope="session")
def libvirt_daemon(tmp_path_factory) -> Iterator[LibvirtDaemon]:
    """A private libvirtd for qemu:///system in its own mount and network namespaces, stopped (guests destroyed
    first) after the session."""
    _ensure_libvirt_accounts()
    base = tmp_path_factory.mktemp("c10f-libvirtd")
    binds = []
    for local, system in _DAEMON_DIRS.items():
        (base / local).mkdir()
        Path(system).mkdir(parents=True, exist_ok=True)
        binds.append(f"mount --bind {base / local} {system}")
    (base / "etc" / "qemu.conf").write_text(QEMU_CONF)
    script = " && ".join([*binds, f"virtlogd -d -p {base}/virtlogd.pid", f"libvirtd -d -p {base}/libvirtd.pid"])
    subprocess.run(["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", script], check=True)
    uri = f"qemu+unix:///system?socket={base}/run/libvirt-sock"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                hypervisor.host_info(uri)
                break
            except hypervisor.HostUnreachable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield LibvirtDaemon(uri=uri, base=base)
    finally:
        libvirt_daemon_stop(uri, base)


@pytest.fixture(scope="session")
def libvirt_host(libvirt_daemon) -> str:
    """The URI of the private libvirtd: ``qemu+unix:///system?socket=…``."""
    return libvirt_daemon.uri


def _download(package: str, into: Path) -> Path:
    done = subprocess.run(["apt-get", "download", package], cwd=into, capture_output=True, text=True, check=False)
    if done.returncode:
        pytest.skip(f"apt-get download {package} failed: {done.stderr.strip()[-300:]}")
    return next(into.glob(f"{package}_*.deb"))


def cloud_kernel() -> tuple[Path, Path]:
    """Debian's current cloud kernel and its module tree, downloaded and unpacked once into var/test-guest/."""
    depends = subprocess.run(
        ["apt-cache", "depends", "linux-image-cloud-amd64"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"Depends: (linux-image-[0-9][^\s]*-cloud-amd64)", depends)
    if not found:
        pytest.skip("apt knows no linux-image-cloud-amd64 (is the Debian archive in sources.list?)")
    package = found.group(1)
    version = package.removeprefix("linux-image-")
    unpacked = GUEST_CACHE / package
    kernel = unpacked / "boot" / f"vmlinuz-{version}"
    if not kernel.exists():
        downloads = GUEST_CACHE / "downloads"
        shutil.rmtree(downloads, ignore_errors=True)
        downloads.mkdir(parents=True)
        deb = _download(package, downloads)
        partial = GUEST_CACHE / f"{package}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run(["dpkg", "-x", str(deb), str(partial)], check=True)
        shutil.rmtree(unpacked, ignore_errors=True)
        partial.rename(unpacked)
        shutil.rmtree(downloads)
    return kernel, unpacked / "lib" / "modules" / version / "kernel"


def modules_in_load_order(tree: Path, wanted: tuple[str, ...]) -> list[Path]:
    """``wanted`` and what they depend on (the ``depends=`` of each module's .modinfo), dependencies first."""
    files = {path.name.removesuffix(".ko").replace("-", "_"): path for path in tree.rglob("*.ko")}
    ordered: list[Path] = []

    def visit(name: str) -> None:
        if name not in files:
            pytest.skip(f"the cloud kernel has no uncompressed module {name}.ko")
        if files[name] in ordered:
            return
        depends = re.search(rb"depends=([\w,-]*)\x00", files[name].read_bytes())
        for dependency in filter(None, depends.group(1).decode().split(",") if depends else []):
            visit(dependency.replace("-", "_"))
        ordered.append(files[name])

    for name in wanted:
        visit(name)
    return ordered


def initramfs(modules: list[Path], into: Path, *, init: str = INIT, scripts: dict[str, str] | None = None) -> Path:
    tree = into / "initramfs"
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "seed", "lib/modules"):
        (tree / directory).mkdir(parents=True)
    for name, text in (scripts or {}).items():
        (tree / name).write_text(text)
        (tree / name).chmod(0o755)
    shutil.copy(BUSYBOX, tree / "bin" / "busybox")
    for module in modules:
        shutil.copy(module, tree / "lib" / "modules" / module.name)
    script = tree / "init"
    script.write_text(init.replace("MODULES", " ".join(module.name.removesuffix(".ko") for module in modules)))
    script.chmod(0o755)
    names = "\n".join(str(path.relative_to(tree)) for path in sorted(tree.rglob("*"))) + "\n"
    archive = subprocess.run(
        ["cpio", "--create", "--format=newc", "--quiet"],
        cwd=tree,
        input=names.encode(),
        capture_output=True,
        check=True,
    ).stdout
    initrd = into / "initrd.gz"
    initrd.write_bytes(gzip.compress(archive, compresslevel=1))
    return initrd


@pytest.fixture(scope="session")
def tiny_guest(tmp_path_factory) -> tuple[Path, Path]:
    """(kernel, initrd) of the tiny guest."""
    kernel, modules = cloud_kernel()
    return kernel, initramfs(modules_in_load_order(modules, GUEST_MODULES), tmp_path_factory.mktemp("c10f-guest"))


SYSLINUX_CFG = """\
DEFAULT guest
LABEL guest
  KERNEL vmlinuz
  APPEND initrd=initrd.gz console=ttyS0 panic=0 quiet
"""
_DISK_TOOLS = ("mkfs.fat", "syslinux", "mcopy")


@pytest.fixture(scope="session")
def guest_disk(tiny_guest, tmp_path_factory) -> Path:
    """A raw disk image that boots the tiny guest by itself: a FAT file system whose boot sector is SYSLINUX's,
    holding the kernel, the initramfs and ``syslinux.cfg`` (the BIOS boots a partitionless disk from sector 0)."""
    kernel, initrd = tiny_guest
    return bootable_disk(kernel, initrd, tmp_path_factory.mktemp("c10f-disk"))


def bootable_disk(kernel: Path, initrd: Path, into: Path) -> Path:
    """``into/guest.raw``: a raw disk that boots ``kernel`` with ``initrd`` by itself (see :func:`guest_disk`)."""
    missing = [tool for tool in _DISK_TOOLS if not shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin")]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (syslinux, mtools, dosfstools: make system-deps)")
    (into / "syslinux.cfg").write_text(SYSLINUX_CFG)
    disk = into / "guest.raw"
    mib = (kernel.stat().st_size + initrd.stat().st_size) // 2**20 + 8
    disk.write_bytes(b"")
    os.truncate(disk, mib * 2**20)
    run = {"check": True, "capture_output": True}
    subprocess.run(["mkfs.fat", "-F", "16", "-n", "ALTOGUEST", str(disk)], **run)
    subprocess.run(["syslinux", "--install", str(disk)], **run)
    for local, name in ((kernel, "vmlinuz"), (initrd, "initrd.gz"), (into / "syslinux.cfg", "syslinux.cfg")):
        subprocess.run(["mcopy", "-i", str(disk), str(local), f"::{name}"], **run)
    return disk


# A guest that stays up and reports every disk plugged into it or pulled out, on its serial console:
# ``ALTO-DISK <serial> <first 32 bytes, unprintable ones as .>`` and ``ALTO-GONE <serial>``.
HOTPLUG_INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in MODULES; do insmod /lib/modules/$module.ko; done
echo ALTO-READY
seen=" "
while true; do
    for path in /sys/block/vd*; do
        [ -e "$path" ] || continue
        name=${path##*/}
        case "$seen" in *" $name="*) continue ;; esac
        [ -b "/dev/$name" ] || continue
        serial=$(cat "$path/serial" 2>/dev/null)
        seen="$seen$name=$serial "
        echo "ALTO-DISK $serial $(head -c 32 "/dev/$name" | tr -c 'A-Za-z0-9:_-' '.')"
    done
    for entry in $seen; do
        name=${entry%%=*}
        if [ ! -e "/sys/block/$name" ]; then
            echo "ALTO-GONE ${entry#*=}"
            seen=$(echo "$seen" | sed "s/ $entry / /")
        fi
    done
    sleep 0.2
done
"""
# virtio disks on the PCI bus (the kernel has ACPI PCI hot-plug built in).
HOTPLUG_MODULES = ("virtio_pci", "virtio_blk")


@pytest.fixture(scope="session")
def hotplug_guest(tmp_path_factory) -> tuple[Path, Path]:
    """(kernel, initrd) of a tiny guest that prints the first bytes of each disk hot-plugged into it."""
    kernel, modules = cloud_kernel()
    into = tmp_path_factory.mktemp("hotplug-guest")
    return kernel, initramfs(modules_in_load_order(modules, HOTPLUG_MODULES), into, init=HOTPLUG_INIT)


def console_wait(console: Path, text: str, *, timeout: float = BOOT_TIMEOUT) -> None:
    """Wait until ``text`` appears in the guest's console log (bounded: the machine's two cores are shared)."""
    deadline = time.monotonic() + timeout
    while text not in (console.read_text(errors="replace") if console.exists() else ""):
        assert time.monotonic() < deadline, f"no {text!r} on the console after {timeout} s:\n" + (
            console.read_text(errors="replace")[-2000:] if console.exists() else "(no console log)"
        )
        time.sleep(0.3)


# A guest on a network: it asks for its address by DHCP (busybox udhcpc; ``ALTO-IP: <address>/<prefix>``) and serves
# ``ALTO-WEB <instance-id from its seed>`` on port 80 with busybox httpd (``ALTO-HTTPD`` once it listens).
WEB_INIT = (
    SEEDED_BOOT
    + r"""id=$(sed -n 's/.*"instance-id": "\([^"]*\)".*/\1/p' /seed/meta-data)
ip link set lo up
for attempt in $(seq 1 100); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
ip link set eth0 up
udhcpc -i eth0 -s /bin/alto-dhcp -t 30 -T 2 -n -q
echo "ALTO-IP: $(ip -4 -o addr show dev eth0 | sed -n 's/.* inet \([0-9./]*\).*/\1/p')"
mkdir -p /www
echo "ALTO-WEB $id" > /www/index.html
httpd -p 80 -h /www && echo ALTO-HTTPD
while true; do sleep 60; done
"""
)
# udhcpc's hook: set the address it was given (``mask`` is the prefix length) and the default route.
DHCP_SCRIPT = r"""#!/bin/sh
case "$1" in
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/$mask" dev "$interface"
        [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
        ;;
esac
exit 0
"""
WEB_MODULES = (*GUEST_MODULES, "virtio_net")


@pytest.fixture(scope="session")
def web_guest_disk(tmp_path_factory) -> Path:
    """A raw disk that boots the web guest (``WEB_INIT``) by itself."""
    kernel, modules = cloud_kernel()
    into = tmp_path_factory.mktemp("web-guest")
    initrd = initramfs(
        modules_in_load_order(modules, WEB_MODULES), into, init=WEB_INIT, scripts={"bin/alto-dhcp": DHCP_SCRIPT}
    )
    disk_dir = into / "disk"
    disk_dir.mkdir()
    return bootable_disk(kernel, initrd, disk_dir)


def until(condition, timeout: float, describe) -> None:
    """Wait for ``condition()``; past ``timeout`` seconds the test fails with ``describe()``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, describe()
        time.sleep(0.5)


def guest_image_publish(*, disk: Path, owner, signer, title: str, inbound_ports: tuple[int, ...] = ()):
    """``disk`` published as a machine image with a ``file:`` location, signed by ``signer`` (a test keyring
    entry) for ``owner``; the caller lets the site read ``disk.parent`` (``MARKETPLACE_FILE_LOCATION_DIRS``)."""
    from marketplace import metadata
    from marketplace import services as marketplace_services
    from marketplace.models import Image
    from tests.marketplace.conftest import T0
    from tests.storage.conftest import checksums_of

    content = disk.read_bytes()
    document = metadata.build(
        image_bytes=len(content),
        checksums=checksums_of(content),
        type="base",
        title=title,
        os="Linux",
        os_arch="x86_64",
        kind="machine",
        format="raw",
        compression="",
        locations=(disk.as_uri(),),
        inbound_ports=inbound_ports,
    )
    entry = marketplace_services.entry_upload(raw=signer.sign(document, now=T0), uploader=owner)
    return Image.objects.get(pk=entry.image.pk)
