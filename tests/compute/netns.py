"""A network namespace of the test's own with a private libvirtd inside (fixture ``netns_libvirt``).

Guests' private addresses must never reach the machine's own network (RUNBOOK.md, "Network namespaces"): the
fixture makes a named namespace ``alto-<random>``, starts ``virtlogd`` and ``libvirtd`` in it with a private mount
namespace whose ``/run/libvirt``, ``/var/lib/libvirt``, ``/etc/libvirt``, ``/var/log/libvirt`` and
``/var/cache/libvirt`` are bound to a temporary folder, so the daemon's bridges, dnsmasq, iptables rules and
sockets all stay there. The test reaches the daemon through its socket (``qemu+unix:///system?socket=…``; a unix
socket is not tied to a network namespace) and runs its client and ``nft`` inside with :meth:`Netns.run`. At the
end the guests and networks are destroyed, the daemons stopped and the namespace deleted.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from compute import hypervisor
from tests.compute.guest import _DAEMON_DIRS, QEMU_CONF, _ensure_libvirt_accounts, libvirt_daemon_stop

_TOOLS = ("ip", "nft", "dnsmasq", "iptables", "libvirtd", "virtlogd", "unshare")
NETNS_MISSING = [tool for tool in _TOOLS if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")]
# The front end's address in the namespace (TEST-NET-2, never routed): where translated ports are opened.
FRONT_ADDRESS = "198.51.100.10"

NETNS = [
    pytest.mark.skipif(
        bool(NETNS_MISSING), reason=f"needs {', '.join(NETNS_MISSING)} (make system-deps installs them)"
    ),
]


@dataclass(frozen=True)
class Netns:
    """A network namespace ``name`` with a libvirtd at ``uri`` keeping its state in ``base``."""

    name: str
    uri: str
    base: Path

    @property
    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def run(self, args: Sequence[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``args`` inside the namespace; its output as text."""
        return subprocess.run([*self.prefix, *args], capture_output=True, text=True, check=check, timeout=timeout)


def _wait_for_daemon(uri: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            hypervisor.host_info(uri)
            return
        except hypervisor.HostUnreachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextlib.contextmanager
def netns_with_libvirtd(base: Path) -> Iterator[Netns]:
    """The namespace and its daemon for the duration of the block (see the module)."""
    _ensure_libvirt_accounts()
    name = f"alto-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        # The front end's address, on an interface of its own so that it is neither loopback nor a guest network.
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "add", "front0", "type", "bridge"], check=True)
        subprocess.run(
            ["ip", "netns", "exec", name, "ip", "addr", "add", f"{FRONT_ADDRESS}/32", "dev", "front0"], check=True
        )
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "front0", "up"], check=True)
        binds = []
        for local, system in _DAEMON_DIRS.items():
            (base / local).mkdir()
            Path(system).mkdir(parents=True, exist_ok=True)
            binds.append(f"mount --bind {base / local} {system}")
        (base / "etc" / "qemu.conf").write_text(QEMU_CONF)
        script = " && ".join([*binds, f"virtlogd -d -p {base}/virtlogd.pid", f"libvirtd -d -p {base}/libvirtd.pid"])
        subprocess.run(
            ["ip", "netns", "exec", name, "unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            check=True,
        )
        uri = f"qemu+unix:///system?socket={base}/run/libvirt-sock"
        try:
            _wait_for_daemon(uri)
            yield Netns(name=name, uri=uri, base=base)
        finally:
            # dnsmasq outlives libvirtd by design (its pid files are under lib/ too); it runs in the namespace and
            # must not outlive it.
            libvirt_daemon_stop(uri, base, pid_dirs=("lib", "run"))
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture(scope="module")
def netns_libvirt(tmp_path_factory) -> Iterator[Netns]:
    """A namespace of the module's own with its libvirtd (see the module); removed after the module."""
    with netns_with_libvirtd(tmp_path_factory.mktemp("netns-libvirtd")) as netns:
        yield netns


@contextlib.contextmanager
def plain_netns() -> Iterator[Netns]:
    """A bare namespace ``alto-<random>`` (loopback up, no daemon), deleted after the block."""
    name = f"alto-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield Netns(name=name, uri="", base=Path("/nonexistent"))
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def veth(a: Netns, a_address: str, b: Netns, b_address: str, *, gateway_in_b: str | None = None) -> None:
    """A veth pair between ``a`` and ``b`` with these addresses (CIDR); ``b`` routes everything via
    ``gateway_in_b`` when given."""
    left, right = f"v{secrets.token_hex(3)}", f"v{secrets.token_hex(3)}"
    subprocess.run(
        ["ip", "-n", a.name, "link", "add", left, "type", "veth", "peer", "name", right, "netns", b.name], check=True
    )
    for ns, link, address in ((a, left, a_address), (b, right, b_address)):
        subprocess.run(["ip", "-n", ns.name, "addr", "add", address, "dev", link], check=True)
        subprocess.run(["ip", "-n", ns.name, "link", "set", link, "up"], check=True)
    if gateway_in_b:
        subprocess.run(["ip", "-n", b.name, "route", "add", "default", "via", gateway_in_b], check=True)
