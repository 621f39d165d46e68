"""State changes of compute objects. Every one writes an audit entry."""

from __future__ import annotations

from django.db import transaction

from compute import hypervisor
from compute.models import Host, InstanceType
from core import audit
from core.errors import ApplicationError, Conflict, Unavailable

# StratusLab's instance types: name → (vCPU, RAM MiB, swap MiB). m1.small is the default.
STRATUSLAB_INSTANCE_TYPES = {
    "t1.micro": (1, 512, 512),
    "m1.small": (1, 1536, 1536),
    "m1.medium": (1, 3072, 3072),
    "m1.large": (2, 6144, 6144),
    "m1.xlarge": (4, 8192, 8192),
    "c1.medium": (2, 1536, 1536),
    "c1.xlarge": (4, 6144, 6144),
}
DEFAULT_INSTANCE_TYPE = "m1.small"


def instance_types_seed(*, actor: object | None) -> list[InstanceType]:
    """Create StratusLab's instance types where missing; existing ones are left as the site set them."""
    created = []
    with transaction.atomic():
        for name, (vcpus, ram_mib, swap_mib) in STRATUSLAB_INSTANCE_TYPES.items():
            itype, was_created = InstanceType.objects.get_or_create(
                name=name,
                defaults={
                    "vcpus": vcpus,
                    "ram_mib": ram_mib,
                    "swap_mib": swap_mib,
                    "is_default": name == DEFAULT_INSTANCE_TYPE
                    and not InstanceType.objects.filter(is_default=True).exists(),
                },
            )
            if was_created:
                audit.record(actor, "compute.instance_type.created", itype, vcpus=vcpus, ram_mib=ram_mib)
                created.append(itype)
    return created


def host_register(*, actor: object | None, name: str, uri: str) -> Host:
    """Register the libvirt host at ``uri`` with the capacity it reports. Probing happens before the
    transaction; a host already registered under that URI is a conflict."""
    try:
        info = hypervisor.host_info(uri)
    except hypervisor.HostUnreachable as exc:
        raise Unavailable(f"{exc}; try again when the host is up.", code="host-unreachable") from None
    except hypervisor.HypervisorRefused as exc:
        raise ApplicationError(str(exc), code="host-refused") from None
    with transaction.atomic():
        if Host.objects.filter(uri=uri).exists():
            raise Conflict(f"a host with URI {uri} is already registered", code="host-exists")
        host = Host.objects.create(name=name, uri=uri, vcpus=info.vcpus, ram_mib=info.ram_mib)
        audit.record(actor, "compute.host.registered", host, uri=uri, vcpus=info.vcpus, ram_mib=info.ram_mib)
    return host
