"""Networks and their leases (DESIGN §4): a network is a pool of IP/MAC leases; an instance takes one
when it is requested and gives it back when it ends. Public leases count against the ``public_ips``
quota through the counter registered in :class:`compute.apps.ComputeConfig`."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from django.db import transaction
from django.utils import timezone

from compute.models import Instance, Lease, Network, NetworkKind
from core import audit
from core.errors import ApplicationError, Conflict, PermissionDenied

# A pool is written row by row; a /20 (4094 addresses) is the largest a site needs for one address class.
MIN_PREFIX = 20
MAX_PREFIX = 30
BRIDGE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # Linux IFNAMSIZ - 1
MAC_PREFIX = "52:54:00"  # QEMU's locally administered OUI


def lease_mac(ip: ipaddress.IPv4Address) -> str:
    """The MAC of the lease of ``ip``: QEMU's prefix and the address's low three bytes, so a pool's MACs
    are unique and anyone can tell a VM's address from its MAC."""
    low = int(ip) & 0xFFFFFF
    return f"{MAC_PREFIX}:{low >> 16:02x}:{(low >> 8) & 0xFF:02x}:{low & 0xFF:02x}"


def _parse(*, cidr: str, gateway: str, dns: list[str]) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]:
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=True)
    except ValueError as exc:
        raise ApplicationError(f"{cidr!r} is not a network in CIDR notation: {exc}", code="network-cidr") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise ApplicationError("only IPv4 networks are supported for now", code="network-cidr")
    if not MIN_PREFIX <= network.prefixlen <= MAX_PREFIX:
        raise ApplicationError(
            f"{network} has a /{network.prefixlen} prefix; a network must be between /{MIN_PREFIX} and /{MAX_PREFIX}",
            code="network-cidr",
        )
    try:
        gw = ipaddress.ip_address(gateway.strip())
    except ValueError:
        raise ApplicationError(f"the gateway {gateway!r} is not an IP address", code="network-gateway") from None
    if gw not in network or gw in (network.network_address, network.broadcast_address):
        raise ApplicationError(f"the gateway {gw} is not a usable address of {network}", code="network-gateway")
    for server in dns:
        try:
            ipaddress.ip_address(str(server).strip())
        except ValueError:
            raise ApplicationError(f"the DNS server {server!r} is not an IP address", code="network-dns") from None
    return network, gw  # type: ignore[return-value]


def network_create(
    *, actor: Any, name: str, kind: str, cidr: str, gateway: str, dns: list[str], bridge: str
) -> Network:
    """Create a network of address class ``kind`` with a lease for every usable address of ``cidr``
    (all but the network, broadcast and gateway addresses). Staff only; one network per class."""
    if not getattr(actor, "is_staff", False):
        raise PermissionDenied("only site administrators add networks")
    name = name.strip()
    if not name:
        raise ApplicationError("a network needs a name", code="network-name")
    if kind not in NetworkKind.values:
        raise ApplicationError(
            f"unknown network kind {kind!r}; known: {', '.join(NetworkKind.values)}", code="network-kind"
        )
    if not BRIDGE_NAME.match(bridge):
        raise ApplicationError(
            f"{bridge!r} is not a bridge name (1-15 letters, digits, '_', '.', '-')", code="network-bridge"
        )
    network, gw = _parse(cidr=cidr, gateway=gateway, dns=dns)
    with transaction.atomic():
        for other in Network.objects.select_for_update().order_by("pk"):
            other_net = ipaddress.ip_network(other.cidr)
            if other.name == name:
                raise Conflict(f"a network named {name} exists already", code="network-exists")
            if other.kind == kind:
                raise Conflict(f"the {kind} network exists already ({other.name}, {other.cidr})", code="network-exists")
            if network.overlaps(other_net):
                raise Conflict(f"{network} overlaps {other.name} ({other.cidr})", code="network-overlap")
        row = Network.objects.create(
            name=name, kind=kind, cidr=str(network), gateway=str(gw), dns=[str(s).strip() for s in dns], bridge=bridge
        )
        Lease.objects.bulk_create(
            [Lease(network=row, ip=str(ip), mac=lease_mac(ip)) for ip in network.hosts() if ip != gw],
            batch_size=1000,
        )
        audit.record(actor, "compute.network.created", row, kind=kind, cidr=str(network), gateway=str(gw))
    return row


def lease_take(*, network_kind: str, instance: Instance, network: Network | None = None) -> Lease:
    """Give ``instance`` a free lease of the ``network_kind`` network (``network``, when the caller has read it
    already: the site's first network of that kind).

    Precondition: inside the transaction that creates ``instance``. Concurrent callers never wait on
    each other's lease (``SKIP LOCKED``) and the conditional update makes a lease held twice impossible."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("lease_take() must run inside transaction.atomic()")
    if network is not None and network.kind != network_kind:
        raise ValueError(f"network {network.name} is a {network.kind} network, not {network_kind}")
    if network is None:
        network = Network.objects.filter(kind=network_kind).order_by("pk").first()
    if network is None:
        raise ApplicationError(f"this site has no {network_kind} network", code="network-unknown")
    for _attempt in range(3):
        lease = (
            Lease.objects.select_for_update(skip_locked=True)
            .filter(network=network, instance__isnull=True)
            .order_by("pk")
            .first()
        )
        if lease is None:
            total = Lease.objects.filter(network=network).count()
            raise Conflict(
                f"the {network_kind} network {network.name} has no free address ({total} of {total} in use)",
                code="no-free-address",
            )
        changed = Lease.objects.filter(pk=lease.pk, instance__isnull=True).update(
            instance=instance, taken=timezone.now()
        )
        if changed == 1:
            lease.instance, lease.network = instance, network
            return lease
    raise Conflict(f"the {network_kind} network is busy; try again", code="no-free-address")


def lease_free(instance: Instance) -> int:
    """Give back the lease ``instance`` holds (none is fine); returns how many were freed."""
    return Lease.objects.filter(instance=instance).update(instance=None, taken=None)
