"""The must-show of networking: a VM requested on ``local`` through the service layer, run by a real Celery worker on
a real libvirtd in a network namespace of the test's own, gets its lease's address from the libvirt network's DHCP
and serves a web page on port 80; a client in the namespace fetches that page through the VM's translated front-end
port (nftables DNAT applied by the worker that serves the front-end queue); after terminate the port is closed and
free again.

Everything that sends a packet (the bridge, dnsmasq, the guest, the nftables table, the client) lives in the
namespace (tests/compute/netns.py), which is removed at the end."""

from __future__ import annotations

import contextlib
import sys
import uuid

import pytest

from compute import hypervisor, packetfilter
from compute.models import Instance, Lease, PortTranslation
from compute.services import host_register, instance_request, instance_terminate
from marketplace.models import Image
from tests.compute.guest import REAL_GUEST, guest_image_publish, until
from tests.compute.netns import FRONT_ADDRESS, NETNS

pytestmark = [*REAL_GUEST, *NETNS, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

STEP_TIMEOUT = 180  # each: to running, to the page, to terminated (TCG on a busy machine)
# The client (busybox-static's wget crashes on this machine): Python's own HTTP client, run inside the namespace.
FETCH = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"


@pytest.fixture
def web_image(settings, owner, registered, keyring, web_guest_disk) -> Image:  # noqa: F811 - conftest fixtures
    """The web guest's disk published as a machine image that serves ssh and http (``slterms:inbound-port``)."""
    settings.MARKETPLACE_FILE_LOCATION_DIRS = [str(web_guest_disk.parent)]
    registered(owner, "owner")
    return guest_image_publish(
        disk=web_guest_disk, owner=owner, signer=keyring["owner"], title="Tiny web guest", inbound_ports=(22, 80)
    )


def test_a_local_vm_serves_its_page_through_its_translated_front_end_port_until_it_is_terminated(
    netns_libvirt, web_image, web_guest_disk, celery_workers, owner, project, staff, types, networks, tmp_path, settings
):
    nft = f"ip netns exec {netns_libvirt.name} nft"
    settings.PORT_TRANSLATION_HOST = settings.PORT_TRANSLATION_ADDRESS = FRONT_ADDRESS
    settings.NFT_COMMAND = nft  # the test reads the table the worker writes
    host = host_register(actor=staff, name=f"net-{uuid.uuid4().hex[:8]}", uri=netns_libvirt.uri)
    instances = tmp_path / "instances"
    worker = celery_workers(
        "net-guest",
        queues=f"host.{host.name},{settings.FRONTEND_QUEUE}",
        env={
            "MARKETPLACE_FILE_LOCATION_DIRS": str(web_guest_disk.parent),
            "IMAGE_CACHE_DIR": str(tmp_path / "image-cache"),
            "INSTANCE_DIR": str(instances),
            "QUARANTINE_DIR": str(tmp_path / "quarantine"),
            "NFT_COMMAND": nft,
            "PORT_TRANSLATION_HOST": FRONT_ADDRESS,
        },
    )
    vm = instance_request(
        actor=owner,
        project=project,
        image=web_image,
        instance_type=types["t1.micro"],
        network="local",
        ssh_keys=[],
        name="web",
    )
    lease = Lease.objects.get(instance=vm)
    ports = {row.guest_port: row.front_port for row in PortTranslation.objects.filter(instance=vm)}
    assert set(ports) == {22, 80} and all(15000 <= port <= 17000 for port in ports.values())
    url = f"http://{FRONT_ADDRESS}:{ports[80]}/"
    domain = f"alto-{vm.uuid}"
    console = instances / str(vm.uuid) / "console.log"

    def shown() -> Instance:
        return Instance.objects.get(pk=vm.pk)

    def console_text() -> str:
        return console.read_text(errors="replace") if console.exists() else "(no console log)"

    def fetch() -> str | None:
        """The page at ``url`` as a client inside the namespace gets it; None when nothing answers."""
        done = netns_libvirt.run([sys.executable, "-c", FETCH, url], check=False, timeout=30)
        return done.stdout if done.returncode == 0 else None

    try:
        until(
            lambda: shown().state in ("running", "error"),
            STEP_TIMEOUT,
            lambda: f"instance {shown().state}: {shown().state_message}\n{worker.log_text()[-3000:]}",
        )
        assert shown().state == "running", f"{shown().state_message}\n{worker.log_text()[-3000:]}"
        until(
            lambda: "ALTO-HTTPD" in console_text(),
            STEP_TIMEOUT,
            lambda: f"the guest did not start its web server:\n{console_text()[-3000:]}",
        )
        # The libvirt network's DHCP gave the guest exactly its lease's address.
        assert f"ALTO-IP: {lease.ip}/24" in console_text(), console_text()[-2000:]

        # Through the front end's translated port, the guest's own page (it names its instance id from the seed).
        until(
            lambda: fetch() is not None,
            STEP_TIMEOUT,
            lambda: f"{url} did not answer; rules: {packetfilter.dnat_rules()}\n{worker.log_text()[-3000:]}",
        )
        assert fetch() == f"ALTO-WEB {vm.uuid}\n"

        instance_terminate(actor=owner, instance=shown())
        until(
            lambda: shown().state in ("terminated", "error"),
            STEP_TIMEOUT,
            lambda: f"instance {shown().state}: {shown().state_message}\n{worker.log_text()[-3000:]}",
        )
        assert shown().state == "terminated", shown().state_message
        # The port is closed (its DNAT rule gone from the front end) and free again (no row holds it).
        until(
            lambda: not packetfilter.dnat_rules(),
            STEP_TIMEOUT,
            lambda: f"rules left after terminate: {packetfilter.dnat_rules()}\n{worker.log_text()[-3000:]}",
        )
        assert fetch() is None
        assert not PortTranslation.objects.filter(front_port__in=list(ports.values())).exists()
        # The lease's DHCP entry went with the VM.
        assert (lease.mac, lease.ip) not in hypervisor.network_dhcp_hosts(netns_libvirt.uri, "alto-local")
    finally:
        with contextlib.suppress(hypervisor.HypervisorError):
            hypervisor.domain_destroy(netns_libvirt.uri, domain)
            hypervisor.domain_undefine(netns_libvirt.uri, domain)
