"""A real guest under qemu (TCG) is defined and started through the adapter and reads its cloud-init seed
(the private libvirtd and the tiny guest: tests/compute/guest.py)."""

from __future__ import annotations

import secrets
import time
import uuid

from compute import hypervisor
from compute.contextualisation import seed_iso
from compute.domain import DomainSpec, domain_xml
from tests.compute.guest import BOOT_TIMEOUT, REAL_GUEST

pytestmark = REAL_GUEST


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
        cmdline="console=ttyS0 panic=0 quiet alto.poweroff",
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
