"""Networks and their leases (DESIGN §4): a network is a pool of IP/MAC leases; an instance takes one
when it is requested and gives it back when it ends. Public leases count against the ``public_ips``
quota through the counter registered in :class:`compute.apps.ComputeConfig`."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from compute import hypervisor
from compute.models import LIVE_STATES, Host, Instance, Lease, Network, NetworkKind
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


def ipv6_of(ipv4: ipaddress.IPv4Address, *, network: ipaddress.IPv4Network, prefix: ipaddress.IPv6Network) -> str:
    """The IPv6 address that goes with ``ipv4``: the same host number in ``prefix`` (10.0.0.5 in 10.0.0.0/24 with
    fd00:10::/64 → fd00:10::5), so that the two addresses of a lease tell each other."""
    return str(prefix.network_address + (int(ipv4) - int(network.network_address)))


def _parse_ipv6(ipv6_cidr: str, *, network: ipaddress.IPv4Network) -> ipaddress.IPv6Network | None:
    if not ipv6_cidr.strip():
        return None
    try:
        prefix = ipaddress.ip_network(ipv6_cidr.strip(), strict=True)
    except ValueError as exc:
        raise ApplicationError(f"{ipv6_cidr!r} is not an IPv6 prefix: {exc}", code="network-ipv6") from None
    if not isinstance(prefix, ipaddress.IPv6Network):
        raise ApplicationError(f"{ipv6_cidr!r} is not an IPv6 prefix", code="network-ipv6")
    # Every IPv4 host number must fit; and SLAAC-sized prefixes are the usual choice (/64), at most /120.
    if prefix.prefixlen > min(120, 128 - (32 - network.prefixlen)):
        raise ApplicationError(
            f"the IPv6 prefix {prefix} is too small for {network}'s {network.num_addresses} addresses",
            code="network-ipv6",
        )
    return prefix


def network_create(
    *,
    actor: Any,
    name: str,
    kind: str,
    cidr: str,
    gateway: str,
    dns: list[str],
    bridge: str,
    ipv6_cidr: str = "",
) -> Network:
    """Create a network of address class ``kind`` with a lease for every usable address of ``cidr``
    (all but the network, broadcast and gateway addresses). With ``ipv6_cidr`` (an IPv6 prefix) every lease also
    has the IPv6 address of the same host number, and the gateway's is the network's IPv6 gateway. Staff only; one
    network per class."""
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
    prefix = _parse_ipv6(ipv6_cidr, network=network)
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
            name=name,
            kind=kind,
            cidr=str(network),
            gateway=str(gw),
            dns=[str(s).strip() for s in dns],
            bridge=bridge,
            ipv6_cidr=str(prefix) if prefix else "",
            ipv6_gateway=ipv6_of(gw, network=network, prefix=prefix) if prefix else None,
        )
        Lease.objects.bulk_create(
            [
                Lease(
                    network=row,
                    ip=str(ip),
                    ipv6=ipv6_of(ip, network=network, prefix=prefix) if prefix else None,
                    mac=lease_mac(ip),
                )
                for ip in network.hosts()
                if ip != gw
            ],
            batch_size=1000,
        )
        audit.record(
            actor,
            "compute.network.created",
            row,
            kind=kind,
            cidr=str(network),
            gateway=str(gw),
            ipv6_cidr=row.ipv6_cidr,
        )
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


# The networks on the hosts: one libvirt network per address class, its DHCP kept in step with the leases. -------

# How each class leaves the host: the guests of ``local`` and ``private`` are masqueraded behind the host's address;
# the ``public`` block is routed to the host by the site's routers and on to the guests unchanged.
FORWARD_MODES = {NetworkKind.PUBLIC: "route", NetworkKind.LOCAL: "nat", NetworkKind.PRIVATE: "nat"}


def libvirt_network_name(network: Network) -> str:
    return f"alto-{network.kind}"


def _dhcp_host(lease: Lease) -> hypervisor.DhcpHost:
    return hypervisor.DhcpHost(mac=lease.mac, ip=lease.ip)


def _held_on_host(network: Network, host: Host) -> list[Lease]:
    """The leases of ``network`` held by live instances placed on ``host``: the DHCP entries its network has."""
    return list(
        Lease.objects.filter(network=network, instance__host=host, instance__state__in=LIVE_STATES).order_by("pk")
    )


def network_spec(network: Network, *, hosts: list[Lease]) -> hypervisor.NetworkSpec:
    """The libvirt network of ``network`` with DHCP entries for ``hosts``."""
    return hypervisor.NetworkSpec(
        name=libvirt_network_name(network),
        bridge=network.bridge,
        forward=FORWARD_MODES[NetworkKind(network.kind)],
        gateway=network.gateway,
        prefix=ipaddress.ip_network(network.cidr).prefixlen,
        hosts=tuple(_dhcp_host(lease) for lease in hosts),
        ipv6_gateway=network.ipv6_gateway or None,
        ipv6_prefix=ipaddress.ip_network(network.ipv6_cidr).prefixlen if network.ipv6_cidr else None,
    )


def host_network_ensure(*, host: Host, lease: Lease) -> None:
    """On ``host``: the libvirt network of the lease's network exists and runs, and its DHCP answers the lease's
    address to the lease's MAC. Called by the boot step before the domain is defined; idempotent. Nothing when the
    site makes its bridges itself (``COMPUTE_MANAGE_NETWORKS`` off)."""
    if not settings.COMPUTE_MANAGE_NETWORKS:
        return
    network = lease.network
    # The leases held on the host are read only when its network is defined now, not for every VM booted on it.
    hypervisor.network_ensure(
        host.uri,
        network_spec(network, hosts=[]),
        hosts=lambda: network_spec(network, hosts=_held_on_host(network, host)).hosts,
    )
    hypervisor.network_dhcp_host_add(host.uri, libvirt_network_name(network), _dhcp_host(lease))


def host_network_release(*, host: Host, lease: Lease) -> None:
    """On ``host``: the lease's DHCP entry is gone (the instance ends). Idempotent."""
    if not settings.COMPUTE_MANAGE_NETWORKS:
        return
    hypervisor.network_dhcp_host_remove(host.uri, libvirt_network_name(lease.network), _dhcp_host(lease))


def host_networks_repair(host: Host) -> list[str]:
    """Put back the DHCP entries of ``host``'s networks that drifted from the leases of the live instances on it
    (missing ones added, others removed; a network that should exist and does not is made). Returns what it did.

    libvirt is read before the database: an entry added after the read is not seen (so not removed), and an
    instance that ends after the database read was still live when libvirt was read."""
    repaired: list[str] = []
    if not settings.COMPUTE_MANAGE_NETWORKS:
        return repaired
    present_networks = set(hypervisor.networks(host.uri))
    present = {
        network.pk: hypervisor.network_dhcp_hosts(host.uri, libvirt_network_name(network))
        for network in Network.objects.order_by("pk")
        if libvirt_network_name(network) in present_networks
    }
    for network in Network.objects.order_by("pk"):
        name = libvirt_network_name(network)
        held = _held_on_host(network, host)
        if name not in present_networks:
            if held:
                hypervisor.network_ensure(host.uri, network_spec(network, hosts=held))
                repaired.append(f"{name}: defined with {len(held)} DHCP entries")
            continue
        wanted = {(lease.mac, lease.ip): lease for lease in held}
        hypervisor.network_ensure(host.uri, network_spec(network, hosts=held))
        for mac, ip in sorted(set(wanted) - present[network.pk]):
            hypervisor.network_dhcp_host_add(host.uri, name, hypervisor.DhcpHost(mac=mac, ip=ip))
            repaired.append(f"{name}: added {mac} {ip}")
        for mac, ip in sorted(present[network.pk] - set(wanted)):
            hypervisor.network_dhcp_host_remove(host.uri, name, hypervisor.DhcpHost(mac=mac, ip=ip))
            repaired.append(f"{name}: removed {mac} {ip}")
    return repaired
