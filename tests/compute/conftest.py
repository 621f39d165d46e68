"""Fixtures for the compute tests: hosts of known sizes, the instance types, the three networks, and a
real signed Marketplace image (the Marketplace tests' keys and entries)."""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.conf import settings

from accounts.services import ssh_key_add
from compute import hypervisor
from compute.models import Host, Instance, InstanceType, Network
from compute.networks import network_create
from compute.services import instance_types_seed
from marketplace import services as marketplace_services
from marketplace.models import Image
from tests.marketplace.conftest import (  # noqa: F401 - fixtures shared with the marketplace tests
    IMAGE,
    _signed_cache,
    entry_for,
    keyring,
    outsider,
    owner,
    registered,
    staff,
    trusted_keyring,
)
from tests.marketplace.keys import pgp_keys  # noqa: F401 - a session fixture entry_for needs
from tests.storage.conftest import volume_settings  # noqa: F401 - volumes in a directory of the test's own


@pytest.fixture
def make_host(db) -> Callable[..., Host]:
    """``make_host("h1", vcpus=8, ram_mib=16384, **fields)``: a host row of that size (no libvirt)."""

    def make(name: str, *, vcpus: int = 8, ram_mib: int = 16384, **fields) -> Host:
        return Host.objects.create(name=name, uri=f"test:///{name}", vcpus=vcpus, ram_mib=ram_mib, **fields)

    return make


@pytest.fixture
def types(db, staff) -> dict[str, InstanceType]:  # noqa: F811 - the fixtures imported above
    instance_types_seed(actor=staff)
    return {t.name: t for t in InstanceType.objects.all()}


@pytest.fixture
def networks(staff) -> dict[str, Network]:  # noqa: F811 - the fixtures imported above
    """The three address classes: private 10.10.0.0/24, local 172.16.0.0/24, public 203.0.113.0/28 (13 leases)."""
    return {
        "private": network_create(
            actor=staff,
            name="private",
            kind="private",
            cidr="10.10.0.0/24",
            gateway="10.10.0.1",
            dns=["10.10.0.1"],
            bridge="br-private",
        ),
        "local": network_create(
            actor=staff,
            name="local",
            kind="local",
            cidr="172.16.0.0/24",
            gateway="172.16.0.1",
            dns=[],
            bridge="br-local",
        ),
        "public": network_create(
            actor=staff,
            name="public",
            kind="public",
            cidr="203.0.113.0/28",
            gateway="203.0.113.1",
            dns=["203.0.113.1"],
            bridge="br-public",
        ),
    }


@pytest.fixture
def image(owner, registered, entry_for) -> Image:  # noqa: F811 - the fixtures imported above
    """A real signed machine image: the creator's Ubuntu entry, allowed by the default policy."""
    registered(owner, "owner")
    return marketplace_services.entry_upload(raw=entry_for("owner"), uploader=owner).image


@pytest.fixture
def instance_on(project, image) -> Callable[..., Instance]:
    """``instance_on(host, itype, state=…, name=…)``: an instance of ``project`` from ``image`` on ``host``, sized
    as ``itype``, made directly (no request, no worker)."""

    def make(host: Host | None, itype: InstanceType, *, state: str = "running", name: str = "vm") -> Instance:
        return Instance.objects.create(
            name=name,
            project=project,
            image=image,
            image_identifier=image.identifier,
            instance_type=itype,
            vcpus=itype.vcpus,
            ram_mib=itype.ram_mib,
            root_gib=itype.root_gib,
            host=host,
            network="private",
            state=state,
        )

    return make


def public_key_line() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.fixture
def owner_key(owner):  # noqa: F811 - the fixtures imported above
    return ssh_key_add(actor=owner, name="laptop", public_key=public_key_line())


@pytest.fixture(autouse=True)
def enqueued(request, monkeypatch) -> list[tuple[str, int, str]]:
    """Worker steps sent by the code under test, as (task name, instance or attachment id, queue), instead of the
    broker (and storage's tasks, as (``storage.volume_<create|delete>``, volume id, queue)); tests marked ``worker``
    send them for real."""
    sent: list[tuple[str, int, str]] = []
    if request.node.get_closest_marker("worker") is None:
        from compute import attachments, execution
        from storage import services as storage_services

        def record(step, instance, *, countdown=None):
            sent.append((step, instance.pk, execution.host_queue(instance)))

        def record_storage(task_name, volume_id):
            sent.append((f"storage.volume_{task_name}", volume_id, settings.STORAGE_QUEUE))

        def record_attachment(step, attachment):
            sent.append((step, attachment.pk, f"host.{attachment.instance.host.name}"))

        monkeypatch.setattr(execution, "enqueue", record)
        monkeypatch.setattr(attachments, "enqueue", record_attachment)
        monkeypatch.setattr(storage_services, "_enqueue", record_storage)
    return sent


# --- A real guest under TCG: a private libvirtd and a tiny kernel + busybox guest (see test_real_guest.py) --------

ROOT = Path(__file__).resolve().parents[2]
GUEST_CACHE = ROOT / "var" / "test-guest"
BUSYBOX = Path("/bin/busybox")
BOOT_TIMEOUT = 120

_TOOLS = ("libvirtd", "virtlogd", "qemu-system-x86_64", "unshare", "cpio", "apt-get", "apt-cache", "dpkg")
_MISSING = [tool for tool in _TOOLS if not shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")]
# The marks of a test that boots a real guest under the private libvirtd (``libvirt_host``).
REAL_GUEST_MARKS = [
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


@pytest.fixture(scope="session")
def libvirt_host(tmp_path_factory) -> Iterator[str]:
    """The URI of a private libvirtd for qemu:///system, stopped (guests destroyed first) after the session."""
    _ensure_libvirt_accounts()
    base = tmp_path_factory.mktemp("libvirtd")
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
        yield uri
    finally:
        # If the daemon is already gone there is nothing left to destroy through it.
        with contextlib.suppress(hypervisor.HypervisorError):
            for domain in hypervisor.domains(uri):
                hypervisor.domain_destroy(uri, domain.name)
        hypervisor.disconnect_all()
        _stop(base / "libvirtd.pid")
        _stop(base / "virtlogd.pid")


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


def initramfs(modules: list[Path], into: Path, *, init: str) -> Path:
    tree = into / "initramfs"
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "seed", "lib/modules"):
        (tree / directory).mkdir(parents=True)
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
