"""The one adapter to libvirt. Nothing else in the project imports ``libvirt``.

Failures come out as :class:`HostUnreachable` (transient: the daemon or the network did not answer, asking
again may help) or :class:`HypervisorRefused` (permanent: libvirt answered no); ``libvirtError`` never leaves
this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

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


class HypervisorError(AdapterError):
    """libvirt failed; the message says which host and what it answered."""


class HostUnreachable(HypervisorError, TransientError):
    """The host's libvirt did not answer (down, restarting, network): asking again may help."""


class HypervisorRefused(HypervisorError, PermanentError):
    """The host's libvirt answered and refused (bad URI, bad XML, no such domain)."""


def _error(uri: str, exc: libvirt.libvirtError) -> HypervisorError:
    kind = HostUnreachable if exc.get_error_code() in _TRANSIENT_CODES else HypervisorRefused
    return kind(f"libvirt host {uri}: {exc.get_error_message()}")


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    vcpus: int
    ram_mib: int
    hypervisor: str


def host_info(uri: str) -> HostInfo:
    """What the host at ``uri`` reports about itself (a short read-only connection)."""
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise _error(uri, exc) from None
    try:
        _model, memory_mib, cpus, *_ = conn.getInfo()
        return HostInfo(hostname=conn.getHostname(), vcpus=cpus, ram_mib=memory_mib, hypervisor=conn.getType())
    except libvirt.libvirtError as exc:
        raise _error(uri, exc) from None
    finally:
        conn.close()
