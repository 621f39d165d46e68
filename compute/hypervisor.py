"""The one adapter to libvirt. Nothing else in the project imports ``libvirt``.

Failures come out as :class:`HostUnreachable` (transient: the daemon or the network did not answer, asking
again may help) or :class:`HypervisorRefused` (permanent: libvirt answered no; :class:`DomainAbsent` when the
domain does not exist); ``libvirtError`` never leaves this module.

One connection per URI per process, opened on first use and kept (:func:`disconnect_all` closes them): a
``test:///path/host.xml`` URI is a private simulated host per ``open()``, and a worker talking to a real host
saves the handshake each call. A connection found dead, or one that failed with a transient error, is
replaced on the next call.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from uuid import UUID

import libvirt
from lxml import etree
from lxml.builder import E

from core.errors import AdapterError, PermanentError, TransientError

# libvirt's error codes that mean "no answer" rather than "no": connecting failed (a socket, ssh, TLS),
# the RPC channel broke, an operation or the guest agent timed out.
_TRANSIENT_CODES = frozenset(
    {
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_OPERATION_TIMEOUT,
        libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    }
)

# libvirt prints every error on stderr besides raising it; we report them ourselves.
libvirt.registerErrorHandler(lambda _context, _error: None, None)

# Domain states as :func:`domain_state` and :func:`domains` name them (virsh's words), plus ``absent``.
RUNNING = "running"
BLOCKED = "blocked"
PAUSED = "paused"
SHUTTING_DOWN = "shutting down"
SHUT_OFF = "shut off"
CRASHED = "crashed"
SUSPENDED = "suspended"
NO_STATE = "no state"
ABSENT = "absent"

_STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: NO_STATE,
    libvirt.VIR_DOMAIN_RUNNING: RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED: PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: SHUT_OFF,
    libvirt.VIR_DOMAIN_CRASHED: CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: SUSPENDED,
}


class HypervisorError(AdapterError):
    """libvirt failed; the message says which host and what it answered."""


class HostUnreachable(HypervisorError, TransientError):
    """The host's libvirt did not answer (down, restarting, network): asking again may help."""


class HypervisorRefused(HypervisorError, PermanentError):
    """The host's libvirt answered and refused (bad URI, bad XML, no such domain)."""


class DomainAbsent(HypervisorRefused):
    """The host has no domain of that name."""


def _error(uri: str, exc: libvirt.libvirtError) -> HypervisorError:
    code = exc.get_error_code()
    kind: type[HypervisorError]
    if code in _TRANSIENT_CODES:
        kind = HostUnreachable
    elif code == libvirt.VIR_ERR_NO_DOMAIN:
        kind = DomainAbsent
    else:
        kind = HypervisorRefused
    return kind(f"libvirt host {uri}: {exc.get_error_message()}")


_connections: dict[str, libvirt.virConnect] = {}
_opening: dict[str, threading.Lock] = {}
_registry = threading.Lock()


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _close(conn: libvirt.virConnect) -> None:
    # Closing a broken connection may fail; it is dropped either way.
    with suppress(libvirt.libvirtError):
        conn.close()


def _connection(uri: str) -> libvirt.virConnect:
    with _registry:
        lock = _opening.setdefault(uri, threading.Lock())
    # One opener per URI, so two threads never open two private test hosts; other URIs are not held up.
    with lock:
        conn = _connections.get(uri)
        if conn is not None and _alive(conn):
            return conn
        if conn is not None:
            _forget(uri, conn)
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise _error(uri, exc) from None
        with _registry:
            _connections[uri] = conn
        return conn


def _forget(uri: str, conn: libvirt.virConnect) -> None:
    with _registry:
        if _connections.get(uri) is conn:
            del _connections[uri]
    _close(conn)


def disconnect_all() -> None:
    """Close every kept connection (worker shutdown, tests). A simulated file host forgets its domains."""
    with _registry:
        conns = list(_connections.values())
        _connections.clear()
    for conn in conns:
        _close(conn)


def _lookup(conn: libvirt.virConnect, uri: str, name: str) -> libvirt.virDomain:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise DomainAbsent(f"libvirt host {uri}: no domain named {name!r}") from None
        raise


@contextmanager
def _session(uri: str) -> Iterator[libvirt.virConnect]:
    """The kept connection to ``uri``; libvirt errors inside come out as :class:`HypervisorError`."""
    conn = _connection(uri)
    try:
        yield conn
    except libvirt.libvirtError as exc:
        error = _error(uri, exc)
        if isinstance(error, HostUnreachable):
            _forget(uri, conn)
        raise error from None


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    vcpus: int
    ram_mib: int
    hypervisor: str


def host_info(uri: str) -> HostInfo:
    """What the host at ``uri`` reports about itself."""
    with _session(uri) as conn:
        _model, memory_mib, cpus, *_ = conn.getInfo()
        return HostInfo(hostname=conn.getHostname(), vcpus=cpus, ram_mib=memory_mib, hypervisor=conn.getType())


def domain_define(uri: str, xml: str) -> None:
    """Define (or redefine: same name and UUID) the persistent domain ``xml``; defining twice is harmless."""
    with _session(uri) as conn:
        conn.defineXML(xml)


def domain_state(uri: str, name: str) -> str:
    """The state of domain ``name`` in virsh's words (:data:`RUNNING`, :data:`SHUT_OFF`…), :data:`ABSENT` if none."""
    try:
        with _session(uri) as conn:
            state, _reason = _lookup(conn, uri, name).state()
    except DomainAbsent:
        return ABSENT
    return _STATE_NAMES.get(state, NO_STATE)


@dataclass(frozen=True)
class DomainInfo:
    name: str
    uuid: UUID
    state: str


def domains(uri: str) -> list[DomainInfo]:
    """Every domain the host knows, running or only defined, sorted by name (for reconciliation)."""
    with _session(uri) as conn:
        found = [
            DomainInfo(name=dom.name(), uuid=UUID(dom.UUIDString()), state=_STATE_NAMES.get(dom.state()[0], NO_STATE))
            for dom in conn.listAllDomains(0)
        ]
    return sorted(found, key=lambda info: info.name)


@dataclass(frozen=True)
class DomainCpu:
    name: str
    cpu_time_ns: int
    vcpus: int


def domains_cpu_time(uri: str) -> list[DomainCpu]:
    """The cumulative CPU time (ns, all vCPUs) libvirt reports for each running domain of the host: one sample, for
    CPU use over time (the difference of two samples over the wall time between them)."""
    with _session(uri) as conn:
        found = []
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            _state, _max_kib, _kib, vcpus, cpu_time = dom.info()
            found.append(DomainCpu(name=dom.name(), cpu_time_ns=int(cpu_time), vcpus=int(vcpus)))
    return sorted(found, key=lambda info: info.name)


def domain_start(uri: str, name: str) -> None:
    """Start the defined domain ``name``; starting a running (or paused) domain is harmless.

    Raises :class:`DomainAbsent` when it is not defined."""
    with _session(uri) as conn:
        dom = _lookup(conn, uri, name)
        if dom.isActive():
            return
        try:
            dom.create()
        except libvirt.libvirtError as exc:
            # Another worker started it between the check and the call.
            if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and dom.isActive():
                return
            raise


def domain_shutdown(uri: str, name: str) -> None:
    """Ask the guest to shut down and return at once; the guest may take its time or ignore it.

    No flags, so qemu presses the ACPI power button (our domains have no guest agent channel).

    A domain that is not running is left as it is. Raises :class:`DomainAbsent` when it is not defined."""
    with _session(uri) as conn:
        dom = _lookup(conn, uri, name)
        if not dom.isActive():
            return
        try:
            dom.shutdown()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and not dom.isActive():
                return
            raise


def domain_reboot(uri: str, name: str) -> None:
    """Ask the guest to reboot (ACPI, as :func:`domain_shutdown`).

    Raises :class:`HypervisorRefused` when it is not running (whatever the driver would do), :class:`DomainAbsent`
    when it is not defined."""
    with _session(uri) as conn:
        dom = _lookup(conn, uri, name)
        if not dom.isActive():
            raise HypervisorRefused(f"libvirt host {uri}: domain {name!r} is not running")
        dom.reboot(0)


def domain_destroy(uri: str, name: str) -> None:
    """Power the domain off at once (pull the plug); its definition stays.

    Idempotent: a domain that is shut off or absent is not an error."""
    try:
        with _session(uri) as conn:
            dom = _lookup(conn, uri, name)
            if not dom.isActive():
                return
            try:
                dom.destroy()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and not dom.isActive():
                    return
                raise
    except DomainAbsent:
        return


def domain_undefine(uri: str, name: str) -> None:
    """Remove the definition of ``name`` (and any managed save and snapshot metadata); its disks stay.

    Destroy it first: a running domain only loses its definition and ends when it stops. Idempotent: an absent
    domain is not an error."""
    try:
        with _session(uri) as conn:
            _lookup(conn, uri, name).undefineFlags(
                libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            )
    except DomainAbsent:
        return


# Disks: hot-plug into a running domain and keep its persistent definition in step. -------------------------


@dataclass(frozen=True)
class DiskInfo:
    """A disk of a domain as libvirt describes it: the guest device, and the file or ``IQN/LUN`` behind it."""

    target: str
    source: str


def _disks(dom: libvirt.virDomain, *, live: bool) -> dict[str, tuple[DiskInfo, str]]:
    """The domain's disks by target, each with its ``<disk>`` XML: the running guest's, or the persistent definition."""
    flags = 0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE
    root = etree.fromstring(dom.XMLDesc(flags).encode())
    found: dict[str, tuple[DiskInfo, str]] = {}
    for disk in root.iterfind("devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        if target is None or not target.get("dev"):
            continue
        where = "" if source is None else (source.get("file") or source.get("name") or source.get("dev") or "")
        found[target.get("dev", "")] = (
            DiskInfo(target=target.get("dev", ""), source=where),
            etree.tostring(disk, encoding="unicode"),
        )
    return found


def _wanted(uri: str, disk_xml: str) -> DiskInfo:
    disk = etree.fromstring(disk_xml.encode())
    target, source = disk.find("target"), disk.find("source")
    if disk.tag != "disk" or target is None or source is None:
        raise HypervisorRefused(f"libvirt host {uri}: not a <disk> with a <target> and a <source>")
    return DiskInfo(target=target.get("dev", ""), source=source.get("file") or source.get("name") or "")


def domain_disks(uri: str, name: str, *, live: bool = False) -> list[DiskInfo]:
    """The disks of domain ``name``'s persistent definition (what it has at its next start, and what
    :func:`domain_disk_attach` and :func:`domain_disk_detach` keep in step with the guest), or with ``live`` the
    running guest's (a domain that is not running has none).

    Raises :class:`DomainAbsent` when it is not defined."""
    with _session(uri) as conn:
        dom = _lookup(conn, uri, name)
        if live and not dom.isActive():
            return []
        # The test driver's guests are imaginary: what it runs is its definition (see _affect).
        live = live and conn.getType() != "TEST"
        return [info for info, _xml in _disks(dom, live=live).values()]


def _affect(uri: str, dom: libvirt.virDomain, wanted: DiskInfo, *, live: bool, plug: str | None) -> bool:
    """Attach (``plug`` = the disk XML) or detach (``plug`` None) ``wanted`` in the live guest or the definition.
    Returns whether it was already so. A target taken by another source is refused."""
    present = _disks(dom, live=live).get(wanted.target)
    if present is not None and present[0].source != wanted.source:
        raise HypervisorRefused(
            f"libvirt host {uri}: device {wanted.target} of {dom.name()} holds {present[0].source}, not {wanted.source}"
        )
    if (present is not None) == (plug is not None):
        return True
    flags = libvirt.VIR_DOMAIN_AFFECT_LIVE if live else libvirt.VIR_DOMAIN_AFFECT_CONFIG
    try:
        if plug is not None:
            dom.attachDeviceFlags(plug, flags)
        elif present is not None:
            dom.detachDeviceFlags(present[1], flags)
    except libvirt.libvirtError as exc:
        code = exc.get_error_code()
        # The guest stopped between the look and the call: its definition is what counts now.
        if live and code == libvirt.VIR_ERR_OPERATION_INVALID and not dom.isActive():
            return True
        if live or code != libvirt.VIR_ERR_NO_SUPPORT or dom.connect().getType() != "TEST":
            raise
        # libvirt's test driver (the simulated hosts) cannot hot-plug: the change is made by redefining the domain
        # with the disk added or removed.
        _redefine(dom, plug=plug, target=wanted.target)
    return False


def _hot_pluggable(dom: libvirt.virDomain) -> bool:
    """Whether a disk change must reach a running guest too: not on the test driver, whose guests are imaginary
    (what it runs is its definition, see :func:`domain_disks`)."""
    return bool(dom.isActive()) and dom.connect().getType() != "TEST"


def _redefine(dom: libvirt.virDomain, *, plug: str | None, target: str) -> None:
    root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    devices = root.find("devices")
    if devices is None:
        devices = etree.SubElement(root, "devices")
    for disk in devices.findall("disk"):
        found = disk.find("target")
        if found is not None and found.get("dev") == target:
            devices.remove(disk)
    if plug is not None:
        devices.append(etree.fromstring(plug.encode()))
    dom.connect().defineXML(etree.tostring(root, encoding="unicode"))


def domain_disk_attach(uri: str, name: str, disk_xml: str) -> None:
    """Plug the disk ``disk_xml`` (a ``<disk>`` element, :func:`compute.domain.disk_xml`) into domain ``name``: into
    the running guest when it runs, and into its persistent definition, so it is there after a restart.

    Idempotent: a disk already there (same target, same source) is not an error. Raises :class:`HypervisorRefused`
    when the target holds another disk or libvirt refuses the disk, :class:`DomainAbsent` when ``name`` is not
    defined."""
    with _session(uri) as conn:
        dom = _lookup(conn, uri, name)
        wanted = _wanted(uri, disk_xml)
        defined_before = _affect(uri, dom, wanted, live=False, plug=disk_xml)
        if _hot_pluggable(dom):
            try:
                _affect(uri, dom, wanted, live=True, plug=disk_xml)
            except libvirt.libvirtError:
                if defined_before:
                    raise
                # Keep the definition as the guest is: a disk the guest could not take is not left for the next boot.
                with suppress(libvirt.libvirtError):
                    _affect(uri, dom, wanted, live=False, plug=None)
                raise


def domain_disk_detach(uri: str, name: str, *, target: str, source: str) -> bool:
    """Unplug the disk at ``target`` (which must hold ``source``: a file path or ``IQN/LUN``) from domain ``name``'s
    definition and ask the running guest to release it. True when it is gone from both; False while the guest
    has not released it yet (a guest unplugs asynchronously: call again until True).

    Idempotent: a disk already gone, or a domain that is not defined, is not an error. Raises
    :class:`HypervisorRefused` when ``target`` holds another disk."""
    wanted = DiskInfo(target=target, source=source)
    try:
        with _session(uri) as conn:
            dom = _lookup(conn, uri, name)
            _affect(uri, dom, wanted, live=False, plug=None)
            if not _hot_pluggable(dom):
                return True
            try:
                _affect(uri, dom, wanted, live=True, plug=None)
            except libvirt.libvirtError as exc:
                # qemu refuses a second request while the guest has not answered the first: still in progress.
                if exc.get_error_code() not in (libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_ERR_OPERATION_TIMEOUT):
                    raise
            return not dom.isActive() or target not in _disks(dom, live=True)
    except DomainAbsent:
        return True


def secret_ensure(uri: str, *, uuid: UUID, usage: str, value: bytes) -> None:
    """Define on the host the iSCSI secret ``uuid`` (private, not kept on disk by libvirt) holding ``value`` (a CHAP
    password) for the target ``usage``. Defining it again replaces the value."""
    xml = etree.tostring(
        E.secret(E.uuid(str(uuid)), E.usage(E.target(usage), type="iscsi"), ephemeral="no", private="yes"),
        encoding="unicode",
    )
    with _session(uri) as conn:
        secret = conn.secretDefineXML(xml, 0)
        secret.setValue(value, 0)


def secret_remove(uri: str, *, uuid: UUID) -> None:
    """Remove the secret ``uuid`` from the host. Idempotent: an absent secret is not an error."""
    with _session(uri) as conn:
        try:
            conn.secretLookupByUUIDString(str(uuid)).undefine()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_SECRET:
                raise


# Networks: one libvirt network per address class, whose DHCP hands out exactly the leases' addresses. -----------


@dataclass(frozen=True)
class DhcpHost:
    """A fixed DHCP answer: the address ``ip`` (and ``ipv6``, if any) for the NIC whose MAC is ``mac``."""

    mac: str
    ip: str
    ipv6: str | None = None


@dataclass(frozen=True)
class NetworkSpec:
    """A libvirt network: ``name`` on the bridge ``bridge``, the host's address ``gateway/prefix`` on it, ``forward``
    one of ``nat`` (the host masquerades the guests), ``route`` (the host routes the block; the site's routers send
    it to the host) or ``open`` (libvirt adds no firewall rules). DHCP answers only the ``hosts`` (no dynamic
    range: every address belongs to a lease). With ``ipv6_gateway``/``ipv6_prefix`` the bridge also carries an
    IPv6 network whose DHCPv6 answers the hosts' ``ipv6``."""

    name: str
    bridge: str
    forward: str
    gateway: str
    prefix: int
    hosts: tuple[DhcpHost, ...] = ()
    ipv6_gateway: str | None = None
    ipv6_prefix: int | None = None


def _host_xml(host: DhcpHost, *, family: str = "ipv4") -> str:
    if family == "ipv6":
        return etree.tostring(E.host(name=host.mac.replace(":", ""), ip=host.ipv6 or ""), encoding="unicode")
    return etree.tostring(E.host(mac=host.mac, ip=host.ip), encoding="unicode")


def network_xml(spec: NetworkSpec) -> str:
    """The ``<network>`` document of ``spec``."""
    if spec.forward not in ("nat", "route", "open"):
        raise HypervisorRefused(f"unknown forward mode {spec.forward!r} for network {spec.name}")
    v4 = E.ip(address=spec.gateway, prefix=str(spec.prefix))
    dhcp = E.dhcp(*[E.host(mac=h.mac, ip=h.ip) for h in spec.hosts])
    v4.append(dhcp)
    children = [E.name(spec.name), E.forward(mode=spec.forward), E.bridge(name=spec.bridge, stp="off", delay="0")]
    # No DNS forwarders from the network's DNS servers: those are what the guests are told to ask (network-config),
    # often the gateway itself, whose dnsmasq would then forward to itself. dnsmasq answers on the gateway and
    # forwards to the host's own resolvers.
    children.append(v4)
    if spec.ipv6_gateway and spec.ipv6_prefix:
        # DHCPv6 identifies a client by its DUID, not its MAC: libvirt's IPv6 host entries are matched by name,
        # so the guests get their IPv6 addresses from cloud-init's network-config (static) and the router
        # advertisements of this network give them the route.
        children.append(E.ip(family="ipv6", address=spec.ipv6_gateway, prefix=str(spec.ipv6_prefix)))
    return etree.tostring(E.network(*children), encoding="unicode")


def _network(conn: libvirt.virConnect, name: str) -> libvirt.virNetwork | None:
    try:
        return conn.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return None
        raise


def _dhcp_hosts(net: libvirt.virNetwork, *, live: bool) -> set[tuple[str, str]]:
    # The test driver (simulated hosts) keeps one document per network: what runs is its definition.
    inactive = not live and net.connect().getType() != "TEST"
    root = etree.fromstring(net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE if inactive else 0).encode())
    return {
        (host.get("mac", "").lower(), host.get("ip", ""))
        for host in root.iterfind("ip/dhcp/host")
        if host.get("mac") and host.get("ip")
    }


def network_ensure(uri: str, spec: NetworkSpec, *, hosts: Callable[[], Sequence[DhcpHost]] | None = None) -> bool:
    """Make the network ``spec.name`` exist, run and start with the host (defined from ``spec`` when missing, with
    its ``hosts``, or with those ``hosts()`` gives when given: asked only when the network is defined now); a network
    already there keeps its DHCP entries (:func:`network_dhcp_hosts_sync` sets those). Returns whether it had to be
    defined or started. Idempotent."""
    with _session(uri) as conn:
        net = _network(conn, spec.name)
        changed = False
        if net is None:
            if hosts is not None:
                spec = dataclasses.replace(spec, hosts=tuple(hosts()))
            try:
                net = conn.networkDefineXML(network_xml(spec))
            except libvirt.libvirtError as exc:
                # Another worker defined it between the look and the call.
                if exc.get_error_code() != libvirt.VIR_ERR_NETWORK_EXIST:
                    raise
                net = conn.networkLookupByName(spec.name)
            changed = True
        if not net.isActive():
            try:
                net.create()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID or not net.isActive():
                    raise
            changed = True
        if not net.autostart():
            net.setAutostart(1)
        return changed


def networks(uri: str) -> list[str]:
    """The names of the host's networks, defined or running, sorted."""
    with _session(uri) as conn:
        return sorted(net.name() for net in conn.listAllNetworks(0))


def network_remove(uri: str, name: str) -> None:
    """Stop and undefine the network ``name``. Idempotent: an absent network is not an error."""
    with _session(uri) as conn:
        net = _network(conn, name)
        if net is None:
            return
        if net.isActive():
            net.destroy()
        with suppress(libvirt.libvirtError):
            net.undefine()


def network_dhcp_hosts(uri: str, name: str) -> set[tuple[str, str]]:
    """The (MAC, IPv4) pairs the running network ``name``'s DHCP answers; empty when it is absent or stopped."""
    with _session(uri) as conn:
        net = _network(conn, name)
        if net is None or not net.isActive():
            return set()
        return _dhcp_hosts(net, live=True)


_UPDATE_BOTH = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG


def _update(net: libvirt.virNetwork, command: int, host: DhcpHost) -> None:
    flags = _UPDATE_BOTH if net.isActive() else libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    net.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, _host_xml(host), flags)


def network_dhcp_host_add(uri: str, name: str, host: DhcpHost) -> bool:
    """Have network ``name``'s DHCP answer ``host.ip`` to ``host.mac``, in the running network and its definition
    (virNetworkUpdate, no restart: the guests on it keep their connections). An entry for the same MAC or address
    with another partner is replaced. Returns whether anything changed. Idempotent."""
    with _session(uri) as conn:
        net = _network(conn, name)
        if net is None:
            raise HypervisorRefused(f"libvirt host {uri}: no network named {name!r}")
        defined = _dhcp_hosts(net, live=False)
        wanted = (host.mac.lower(), host.ip)
        if wanted in defined:
            return False
        present = defined
        # The test driver keeps one document per network (what runs is its definition): read once.
        if net.isActive() and net.connect().getType() != "TEST":
            present = _dhcp_hosts(net, live=True) | defined
        for mac, ip in present:
            if (mac, ip) != wanted and (mac == wanted[0] or ip == wanted[1]):
                _dhcp_host_delete(net, DhcpHost(mac=mac, ip=ip))
        _dhcp_host_delete(net, host)
        _update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, host)
        return True


def _dhcp_host_delete(net: libvirt.virNetwork, host: DhcpHost) -> None:
    """Delete ``host`` from the running network and from its definition, wherever it is (either may lack it: libvirt
    then answers "operation invalid", which is what we wanted). The definition is not always readable apart (the test
    driver), so both are asked."""
    for flags in (libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE, libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG):
        if flags == libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE and not net.isActive():
            continue
        try:
            net.update(
                libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
                -1,
                _host_xml(host),
                flags,
            )
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                raise


def network_dhcp_host_remove(uri: str, name: str, host: DhcpHost) -> bool:
    """Stop network ``name``'s DHCP answering ``host``. Returns whether anything changed. Idempotent: an absent
    network or entry is not an error."""
    with _session(uri) as conn:
        net = _network(conn, name)
        if net is None:
            return False
        found = (host.mac.lower(), host.ip)
        if found not in _dhcp_hosts(net, live=bool(net.isActive())) | _dhcp_hosts(net, live=False):
            return False
        _dhcp_host_delete(net, host)
        return True
