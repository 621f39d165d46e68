"""The networks on a real libvirtd in a network namespace: reconciliation restores what was lost on the hosts and the
front end (a libvirt network's deleted DHCP host entries, the front end's deleted DNAT rules, real nft there); a class
with an IPv6 prefix has both addresses on its bridge."""

from __future__ import annotations

import uuid

import pytest

from compute import access, hypervisor, packetfilter
from compute.models import Lease
from compute.networks import host_network_ensure, libvirt_network_name, network_create, network_spec
from compute.reconciliation import host_reconcile
from compute.services import host_register, instance_request
from tests.compute.guest import REAL_GUEST
from tests.compute.netns import FRONT_ADDRESS, NETNS

pytestmark = [*REAL_GUEST, *NETNS, pytest.mark.django_db(transaction=True)]


def test_reconciliation_restores_deleted_dhcp_host_entries_and_deleted_dnat_rules(
    netns_libvirt, owner, project, staff, ported_image, types, networks, settings
):
    settings.PORT_TRANSLATION_HOST = settings.PORT_TRANSLATION_ADDRESS = FRONT_ADDRESS
    settings.NFT_COMMAND = f"ip netns exec {netns_libvirt.name} nft"
    host = host_register(actor=staff, name=f"rec-{uuid.uuid4().hex[:8]}", uri=netns_libvirt.uri)
    vms = [
        instance_request(
            actor=owner,
            project=project,
            image=ported_image,
            instance_type=types["t1.micro"],
            network="local",
            ssh_keys=[],
            name=f"vm{n}",
        )
        for n in range(2)
    ]
    leases = [Lease.objects.select_related("network").get(instance=vm) for vm in vms]
    for lease in leases:  # what the boot step does
        host_network_ensure(host=host, lease=lease)
    access.frontend_sync()
    name = libvirt_network_name(networks["local"])
    entries = {(lease.mac, lease.ip) for lease in leases}
    assert hypervisor.network_dhcp_hosts(netns_libvirt.uri, name) == entries
    rules = packetfilter.dnat_rules()
    assert len(rules) == 4  # ssh and http of each

    # Lost: one DHCP entry deleted by hand, a stray one added; the front end rebooted (our table is gone).
    hypervisor.network_dhcp_host_remove(
        netns_libvirt.uri, name, hypervisor.DhcpHost(mac=leases[0].mac, ip=leases[0].ip)
    )
    hypervisor.network_dhcp_host_add(
        netns_libvirt.uri, name, hypervisor.DhcpHost(mac="52:54:00:10:00:99", ip="172.16.0.99")
    )
    packetfilter.table_remove()

    report = host_reconcile(host_id=host.pk)
    assert report.networks_repaired == [
        f"{name}: added {leases[0].mac} {leases[0].ip}",
        f"{name}: removed 52:54:00:10:00:99 172.16.0.99",
    ]
    assert hypervisor.network_dhcp_hosts(netns_libvirt.uri, name) == entries
    # dnsmasq's own file says the same (libvirt rewrote it without a restart).
    hostsfile = (netns_libvirt.base / "lib" / "dnsmasq" / f"{name}.hostsfile").read_text()
    assert sorted(hostsfile.split()) == sorted(f"{mac},{ip}" for mac, ip in entries)

    synced = access.frontend_sync()
    assert len(synced.restored) == 4 and synced.removed == []
    assert packetfilter.dnat_rules() == rules
    # Nothing left to repair: a second run changes nothing.
    assert host_reconcile(host_id=host.pk).networks_repaired == []
    assert access.frontend_sync().restored == []


def test_the_libvirt_network_of_a_class_with_an_ipv6_prefix_carries_both_addresses_on_its_bridge(netns_libvirt, staff):
    network = network_create(
        actor=staff,
        name="local6",
        kind="local",
        cidr="172.16.0.0/24",
        gateway="172.16.0.1",
        dns=[],
        bridge="br-local6",
        ipv6_cidr="fd00:16::/64",
    )
    lease = Lease.objects.get(network=network, ip="172.16.0.5")
    name = libvirt_network_name(network)
    hypervisor.network_remove(netns_libvirt.uri, name)  # the module's namespace: another test's local network
    hypervisor.network_ensure(netns_libvirt.uri, network_spec(network, hosts=[lease]))
    try:
        assert hypervisor.network_dhcp_hosts(netns_libvirt.uri, name) == {("52:54:00:10:00:05", "172.16.0.5")}
        shown = netns_libvirt.run(["ip", "-o", "addr", "show", "dev", "br-local6"]).stdout
        assert "172.16.0.1/24" in shown and "fd00:16::1/64" in shown
    finally:
        hypervisor.network_remove(netns_libvirt.uri, name)
