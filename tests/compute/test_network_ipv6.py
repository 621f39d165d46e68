"""IPv6 on an address class: a network with an IPv6 prefix gives each lease both addresses, cloud-init's
network-config says both (the libvirt network carrying both: tests/compute/test_network_reconciliation.py)."""

from __future__ import annotations

import json

import pytest

from compute.contextualisation import NetworkConfig, network_config
from compute.models import Lease
from compute.networks import network_create
from core.errors import ApplicationError

pytestmark = pytest.mark.django_db


def local(staff, **fields):
    values = {
        "name": "local",
        "kind": "local",
        "cidr": "172.16.0.0/24",
        "gateway": "172.16.0.1",
        "dns": [],
        "bridge": "br-local",
        "ipv6_cidr": "fd00:16::/64",
        **fields,
    }
    return network_create(actor=staff, **values)


def test_a_network_with_an_ipv6_prefix_gives_each_lease_the_ipv6_address_of_the_same_host_number(staff):
    network = local(staff)
    assert (network.ipv6_cidr, network.ipv6_gateway) == ("fd00:16::/64", "fd00:16::1")
    lease = Lease.objects.get(network=network, ip="172.16.0.5")
    assert lease.ipv6 == "fd00:16::5"
    assert Lease.objects.filter(network=network, ipv6__isnull=True).count() == 0
    assert Lease.objects.values("ipv6").distinct().count() == 253


def test_a_network_without_an_ipv6_prefix_has_ipv4_leases_only(staff):
    network = local(staff, ipv6_cidr="")
    assert network.ipv6_gateway is None and not Lease.objects.filter(ipv6__isnull=False).exists()


@pytest.mark.parametrize(
    "prefix", ["fd00:16::1/64", "172.17.0.0/24", "fd00:16::/125", "not a prefix", "fd00:16::/64; rm -rf /"]
)
def test_a_bad_ipv6_prefix_is_refused_and_makes_nothing(staff, prefix):
    with pytest.raises(ApplicationError) as refused:
        local(staff, ipv6_cidr=prefix)
    assert refused.value.code == "network-ipv6"
    assert not Lease.objects.exists()


def test_network_config_gives_the_guest_both_addresses_and_both_default_routes():
    config = json.loads(
        network_config(
            NetworkConfig(
                mac="52:54:00:10:00:05",
                address="172.16.0.5/24",
                gateway="172.16.0.1",
                address6="fd00:16::5/64",
                gateway6="fd00:16::1",
            )
        )
    )
    eth0 = config["ethernets"]["eth0"]
    assert eth0["addresses"] == ["172.16.0.5/24", "fd00:16::5/64"]
    assert eth0["routes"] == [{"to": "default", "via": "172.16.0.1"}, {"to": "::/0", "via": "fd00:16::1"}]


def test_network_config_refuses_an_ipv6_gateway_outside_the_prefix():
    with pytest.raises(ValueError, match="outside"):
        NetworkConfig(mac="52:54:00:10:00:05", address="172.16.0.5/24", address6="fd00:16::5/64", gateway6="fd00:17::1")


def test_staff_add_a_network_with_an_ipv6_prefix_through_the_api_and_vms_show_both_addresses(
    api, staff, owner, project, image, types, make_host
):
    from compute.services import instance_request

    api.force_authenticate(user=staff)
    made = api.post(
        "/api/v1/admin/networks/",
        {
            "name": "local",
            "kind": "local",
            "cidr": "172.16.0.0/24",
            "gateway": "172.16.0.1",
            "bridge": "br-local",
            "ipv6_cidr": "fd00:16::/64",
        },
        format="json",
    )
    assert made.status_code == 201, made.content
    assert (made.json()["ipv6_cidr"], made.json()["ipv6_gateway"]) == ("fd00:16::/64", "fd00:16::1")
    make_host("h1")
    vm = instance_request(
        actor=owner,
        project=project,
        image=image,
        instance_type=types["t1.micro"],
        network="local",
        ssh_keys=[],
        name="both",
    )
    api.force_authenticate(user=owner)
    shown = api.get(f"/api/v1/compute/instances/{vm.uuid}/").json()
    assert (shown["ip"], shown["ipv6"]) == ("172.16.0.2", "fd00:16::2")
