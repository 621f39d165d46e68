"""A real guest under qemu (TCG) is defined and started through the adapter and reads its cloud-init seed.

The session starts a private libvirtd (RUNBOOK.md): in its own mount and network namespaces, with
``/run/libvirt``, ``/var/lib/libvirt``, ``/etc/libvirt``, ``/var/log/libvirt`` and ``/var/cache/libvirt`` bound to a
temporary directory, so it neither sees nor disturbs another daemon on the machine and its guests can send no
packets. We reach it through its socket: ``qemu+unix:///system?socket=<tmp>/run/libvirt-sock``.

The guest is Debian's cloud kernel (downloaded once into ``var/test-guest/``) with an initramfs of
``busybox-static`` whose ``/init`` loads the cdrom and iso9660 modules, mounts the cdrom labelled ``cidata``,
prints the SSH key line of its ``user-data`` to the serial console and powers off.
"""

from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path

import pytest

from compute import hypervisor
from compute.contextualisation import seed_iso
from compute.domain import DomainSpec, domain_xml
from tests.compute.conftest import BOOT_TIMEOUT, REAL_GUEST_MARKS, cloud_kernel, initramfs, modules_in_load_order

# What the guest needs to see its seed: the IDE controller of the `pc` machine, the cdrom and its file system.
GUEST_MODULES = ("ata_piix", "sr_mod", "isofs")

pytestmark = REAL_GUEST_MARKS

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in MODULES; do insmod /lib/modules/$module.ko; done
# The seed is the cdrom whose ISO 9660 volume label (at byte 32808) is cidata; busybox's findfs misses it.
for attempt in $(seq 1 200); do
    for device in /dev/sr*; do
        [ -b "$device" ] && [ "$(dd if=$device bs=1 skip=32808 count=6 2>/dev/null)" = cidata ] && break 2
    done
    sleep 0.1
done
mount -t iso9660 -o ro "$device" /seed
echo "ALTO-SEED-KEY: $(grep -o 'ssh-[a-z0-9]* [A-Za-z0-9+/=]* [A-Za-z0-9@._-]*' /seed/user-data)"
poweroff -f
"""


@pytest.fixture(scope="session")
def tiny_guest(tmp_path_factory) -> tuple[Path, Path]:
    """(kernel, initrd) of the tiny guest."""
    kernel, modules = cloud_kernel()
    return kernel, initramfs(modules_in_load_order(modules, GUEST_MODULES), tmp_path_factory.mktemp("guest"), init=INIT)


def test_a_real_guest_reads_its_ssh_key_from_the_seed_iso(libvirt_host, tiny_guest, tmp_path):
    kernel, initrd = tiny_guest
    key = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{secrets.token_hex(16)} alto-test@guest"
    instance = uuid.uuid4()
    seed = tmp_path / "seed.iso"
    seed.write_bytes(seed_iso(instance_uuid=instance, hostname="guest", ssh_keys=[key], user_data=None, network=None))
    console = tmp_path / "console.log"
    name = f"alto-test-{instance.hex[:12]}"
    spec = DomainSpec(
        name=name,
        uuid=instance,
        vcpus=1,
        ram_mib=256,
        console_log=str(console),
        kernel=str(kernel),
        initrd=str(initrd),
        cmdline="console=ttyS0 panic=0 quiet",
        seed_iso=str(seed),
    )
    hypervisor.domain_define(libvirt_host, domain_xml(spec))
    try:
        hypervisor.domain_start(libvirt_host, name)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while f"ALTO-SEED-KEY: {key}" not in (console.read_text(errors="replace") if console.exists() else ""):
            assert time.monotonic() < deadline, f"no key on the console after {BOOT_TIMEOUT} s:\n" + (
                console.read_text(errors="replace")[-2000:] if console.exists() else "(no console log)"
            )
            time.sleep(0.5)
        # The guest powers itself off: with <acpi/> that ends the domain.
        while hypervisor.domain_state(libvirt_host, name) != hypervisor.SHUT_OFF:
            assert time.monotonic() < deadline, "the guest printed its key but did not power off"
            time.sleep(0.2)
    finally:
        hypervisor.domain_destroy(libvirt_host, name)
        hypervisor.domain_undefine(libvirt_host, name)
    assert hypervisor.domain_state(libvirt_host, name) == hypervisor.ABSENT
