"""The one adapter to libvirt. Nothing else in the project imports ``libvirt``."""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from core.errors import Unavailable


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
        raise Unavailable(f"libvirt host {uri} did not answer: {exc.get_error_message()}") from None
    try:
        _model, memory_mib, cpus, *_ = conn.getInfo()
        return HostInfo(hostname=conn.getHostname(), vcpus=cpus, ram_mib=memory_mib, hypervisor=conn.getType())
    finally:
        conn.close()
