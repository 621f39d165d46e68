"""Networks: what network_create accepts and refuses, the pool of leases it makes, and taking leases."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from compute.models import Lease, Network
from compute.networks import lease_free, lease_mac, lease_take, network_create
from core.errors import ApplicationError, Conflict, PermissionDenied
from core.models import AuditEntry

pytestmark = pytest.mark.django_db


def create(actor, **fields):
    values = {
        "name": "private",
        "kind": "private",
        "cidr": "10.0.0.0/24",
        "gateway": "10.0.0.1",
        "dns": ["10.0.0.1"],
        "bridge": "br0",
        **fields,
    }
    return network_create(actor=actor, **values)


def test_a_network_has_a_lease_for_every_usable_address_but_the_gateway(staff):
    network = create(staff)
    ips = list(Lease.objects.filter(network=network).values_list("ip", flat=True))
    assert len(ips) == 253 and "10.0.0.1" not in ips and "10.0.0.0" not in ips and "10.0.0.255" not in ips
    lease = Lease.objects.get(network=network, ip="10.0.0.2")
    assert lease.mac == "52:54:00:00:00:02" and lease.instance is None
    assert AuditEntry.objects.filter(action="compute.network.created").count() == 1


def test_lease_macs_are_derived_from_the_address():
    import ipaddress

    assert lease_mac(ipaddress.IPv4Address("203.0.113.77")) == "52:54:00:00:71:4d"


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ({"cidr": "10.0.0.0/33"}, "network-cidr", "is not a network in CIDR notation"),
        ({"cidr": "10.0.0.5/24"}, "network-cidr", "has host bits set"),
        ({"cidr": "nonsense"}, "network-cidr", "is not a network in CIDR notation"),
        ({"cidr": "10.0.0.0/8"}, "network-cidr", "between /20 and /30"),
        ({"cidr": "2001:db8::/64"}, "network-cidr", "only IPv4"),
        ({"gateway": "10.0.1.1"}, "network-gateway", "not a usable address of 10.0.0.0/24"),
        ({"gateway": "10.0.0.255"}, "network-gateway", "not a usable address"),
        ({"gateway": "gw"}, "network-gateway", "is not an IP address"),
        ({"dns": ["dns.example.org"]}, "network-dns", "is not an IP address"),
        ({"kind": "dmz"}, "network-kind", "known: public, local, private"),
        ({"bridge": "a-bridge-name-too-long"}, "network-bridge", "is not a bridge name"),
    ],
)
def test_bad_network_input_is_refused_with_the_reason_and_changes_nothing(staff, fields, code, words):
    with pytest.raises(ApplicationError) as refused:
        create(staff, **fields)
    assert refused.value.status == 400 and refused.value.code == code
    assert words in refused.value.message
    assert not Network.objects.exists() and not Lease.objects.exists()


def test_a_network_overlapping_another_is_a_conflict(staff):
    create(staff)
    with pytest.raises(Conflict) as refused:
        create(staff, name="local", kind="local", cidr="10.0.0.128/25", gateway="10.0.0.129")
    assert refused.value.code == "network-overlap"
    assert refused.value.message == "10.0.0.128/25 overlaps private (10.0.0.0/24)"
    assert Network.objects.count() == 1


def test_a_second_network_of_one_kind_is_a_conflict(staff):
    create(staff)
    with pytest.raises(Conflict, match="the private network exists already"):
        create(staff, name="other", cidr="10.1.0.0/24", gateway="10.1.0.1")


def test_only_staff_add_networks(owner):
    with pytest.raises(PermissionDenied):
        create(owner)


def test_the_last_free_lease_is_taken_and_then_the_pool_is_exhausted(staff, owner, project, types, image, make_host):
    from compute.models import Instance

    host = make_host("h1")
    create(staff, name="public", kind="public", cidr="203.0.113.0/30", gateway="203.0.113.1")

    def instance(n):
        itype = types["t1.micro"]
        return Instance.objects.create(
            name=f"vm{n}",
            project=project,
            image=image,
            image_identifier=image.identifier,
            instance_type=itype,
            vcpus=1,
            ram_mib=512,
            root_gib=10,
            host=host,
            network="public",
            state="scheduled",
        )

    with transaction.atomic():
        first = instance(1)
        lease = lease_take(network_kind="public", instance=first)
    assert lease.ip == "203.0.113.2"
    with pytest.raises(Conflict) as refused, transaction.atomic():
        lease_take(network_kind="public", instance=instance(2))
    assert refused.value.status == 409 and refused.value.code == "no-free-address"
    assert refused.value.message == "the public network public has no free address (1 of 1 in use)"
    assert lease_free(first) == 1
    with transaction.atomic():
        assert lease_take(network_kind="public", instance=instance(3)).ip == "203.0.113.2"


def test_a_lease_cannot_be_held_by_two_instances_nor_an_address_leased_twice(staff):
    network = create(staff)
    with pytest.raises(IntegrityError), transaction.atomic():
        Lease.objects.create(network=network, ip="10.0.0.2", mac="52:54:00:ff:ff:ff")
    with pytest.raises(IntegrityError), transaction.atomic():
        Lease.objects.create(network=network, ip="10.0.0.250", mac="52:54:00:00:00:02")
