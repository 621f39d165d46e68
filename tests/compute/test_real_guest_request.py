"""A VM requested through the service layer (``instance_request``) on a real libvirtd for ``qemu:///system`` and
executed by a real Celery worker process boots the tiny guest from its Marketplace image; the guest's init
prints the SSH key it found in the cloud-init seed ISO to the serial console, where the test finds it, and turns
on the swap disk of the instance type, found by its label.

The image is a real bootable disk (tests/compute/guest.py ``guest_disk``) published with a signed entry; the
worker caches it, makes the qcow2 overlay and the seed ISO, defines the domain from the instance and starts it
on the private libvirtd, in whose network namespace the boot step makes the private network (libvirt's, with its
bridge and DHCP)."""

from __future__ import annotations

import contextlib
import uuid

import pytest

from accounts.services import ssh_key_add
from compute import hypervisor
from compute.models import Instance
from compute.services import host_register, instance_request, instance_terminate
from marketplace.models import Image
from tests.compute.conftest import public_key_line
from tests.compute.guest import REAL_GUEST, guest_image_publish, until

pytestmark = [*REAL_GUEST, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

STEP_TIMEOUT = 180  # each: to running, to the key on the console, to terminated (TCG on a busy machine)


@pytest.fixture
def guest_image(settings, owner, registered, keyring, guest_disk) -> Image:  # noqa: F811 - conftest fixtures
    """The bootable guest disk published as a machine image with a ``file:`` location the site allows."""
    settings.MARKETPLACE_FILE_LOCATION_DIRS = [str(guest_disk.parent)]
    registered(owner, "owner")
    return guest_image_publish(disk=guest_disk, owner=owner, signer=keyring["owner"], title="Tiny test guest")


def test_a_vm_requested_through_the_service_layer_boots_and_prints_its_cloud_init_ssh_key(
    libvirt_daemon, guest_image, guest_disk, celery_workers, owner, staff, project, types, networks, tmp_path
):
    host = host_register(actor=staff, name=f"c10f-guest-{uuid.uuid4().hex[:8]}", uri=libvirt_daemon.uri)
    key = ssh_key_add(actor=owner, name="laptop", public_key=f"{public_key_line()} researcher@laptop")
    instances = tmp_path / "instances"
    worker = celery_workers(
        "c10f-guest",
        queues=f"host.{host.name}",
        env={
            "MARKETPLACE_FILE_LOCATION_DIRS": str(guest_disk.parent),
            "IMAGE_CACHE_DIR": str(tmp_path / "image-cache"),
            "INSTANCE_DIR": str(instances),
            "QUARANTINE_DIR": str(tmp_path / "quarantine"),
        },
    )
    vm = instance_request(
        actor=owner,
        project=project,
        image=guest_image,
        instance_type=types["t1.micro"],
        network="private",
        ssh_keys=[key.pk],
        user_data="",  # our #cloud-config alone, in plain text (with the user's own it is a base64 MIME part)
        volatile_gib=0,
        name="guest",
    )
    domain = f"alto-{vm.uuid}"
    console = instances / str(vm.uuid) / "console.log"

    def shown() -> Instance:
        return Instance.objects.get(pk=vm.pk)

    def console_text() -> str:
        return console.read_text(errors="replace") if console.exists() else "(no console log)"

    try:
        until(
            lambda: shown().state in ("running", "error"),
            STEP_TIMEOUT,
            lambda: f"instance {shown().state}: {shown().state_message}\n{worker.log_text()[-3000:]}",
        )
        assert shown().state == "running", f"{shown().state_message}\n{worker.log_text()[-3000:]}"
        assert hypervisor.domain_state(libvirt_daemon.uri, domain) == hypervisor.RUNNING

        until(
            lambda: f"ALTO-SEED-KEY: {key.public_key}" in console_text(),
            STEP_TIMEOUT,
            lambda: f"no key on the console after {STEP_TIMEOUT} s:\n{console_text()[-3000:]}",
        )

        # The type's swap disk (t1.micro: 512 MiB) reached the guest, labelled, and works as swap there.
        until(
            lambda: "ALTO-SWAP: 1 /dev/vd" in console_text(),
            STEP_TIMEOUT,
            lambda: f"the guest did not turn on its swap disk:\n{console_text()[-3000:]}",
        )

        instance_terminate(actor=owner, instance=shown())
        until(
            lambda: shown().state in ("terminated", "error"),
            STEP_TIMEOUT,
            lambda: f"instance {shown().state}: {shown().state_message}\n{worker.log_text()[-3000:]}",
        )
        assert shown().state == "terminated", shown().state_message
        assert hypervisor.domain_state(libvirt_daemon.uri, domain) == hypervisor.ABSENT
    finally:
        with contextlib.suppress(hypervisor.HypervisorError):
            hypervisor.domain_destroy(libvirt_daemon.uri, domain)
            hypervisor.domain_undefine(libvirt_daemon.uri, domain)
