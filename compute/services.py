"""State changes of compute objects. Every one writes an audit entry."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from accounts import selectors as account_selectors
from accounts.models import Project, SshKey
from accounts.quotas import quota_reserve
from compute import access, attachments, execution, firewalls, hypervisor, scheduler
from compute.models import Host, Instance, InstanceState, InstanceType, Network, NetworkKind
from compute.networks import lease_free, lease_take
from core import audit
from core.errors import ApplicationError, Conflict, PermissionDenied, Unavailable
from core.workflow import transition
from marketplace.models import Image
from marketplace.policy.evaluation import evaluate
from storage import selectors as storage_selectors

logger = logging.getLogger(__name__)

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


# Instance types (site data, DESIGN §4): made, changed and retired by staff through the admin API and the Django admin.
INSTANCE_TYPE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,48}[a-z0-9])?$")
# Bounds that catch typing errors (a RAM size in GiB, a disk in MiB) without limiting a real site.
INSTANCE_TYPE_LIMITS = {"vcpus": (1, 1024), "ram_mib": (64, 16 * 2**20), "swap_mib": (0, 2**20), "root_gib": (1, 65536)}


def instance_type_check(values: Mapping[str, object], *, current: InstanceType | None = None) -> None:
    """Raise ApplicationError / Conflict when ``values`` (new, or changes to ``current``) break a rule: the name,
    the sizes' bounds, and the default (the default stays offered; taking it away needs another default)."""
    name = values.get("name")
    if name is not None and (not isinstance(name, str) or not INSTANCE_TYPE_NAME.match(name)):
        raise ApplicationError(
            f"{name!r} is not a valid instance type name: 1 to 50 lower-case letters, digits, dots, hyphens and "
            "underscores, starting and ending with a letter or digit",
            code="instance-type-name",
        )
    for field, (low, high) in INSTANCE_TYPE_LIMITS.items():
        value = values.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            raise ApplicationError(f"{field} must be {low} to {high}, got {value!r}", code="instance-type-size")
    if current is None:
        return
    is_default = bool(values.get("is_default", current.is_default))
    if current.is_default and not is_default:
        raise Conflict(
            f"{current.name} is the default instance type: make another type the default instead",
            code="instance-type-default",
        )
    if is_default and not values.get("is_active", current.is_active):
        raise Conflict(
            f"{current.name} is the default instance type: make another type the default before retiring it",
            code="instance-type-default",
        )


def _default_take(instance_type: InstanceType) -> None:
    """Make ``instance_type`` the only default (the others lose it first: one default, a unique constraint)."""
    InstanceType.objects.filter(is_default=True).exclude(pk=instance_type.pk).update(is_default=False)


def instance_type_create(
    *,
    actor: object | None,
    name: str,
    vcpus: int,
    ram_mib: int,
    swap_mib: int = 0,
    root_gib: int = 10,
    is_default: bool = False,
) -> InstanceType:
    """A new offered instance type; ``is_default`` moves the default to it. Conflict ``instance-type-exists``."""
    values = {"name": name, "vcpus": vcpus, "ram_mib": ram_mib, "swap_mib": swap_mib, "root_gib": root_gib}
    instance_type_check(values)
    with transaction.atomic():
        if InstanceType.objects.filter(name=name).exists():
            raise Conflict(f"an instance type named {name} exists already", code="instance-type-exists")
        if is_default:
            InstanceType.objects.filter(is_default=True).update(is_default=False)
        itype = InstanceType.objects.create(**values, is_default=is_default, is_active=True)
        audit.record(actor, "compute.instance_type.created", itype, **values, is_default=is_default)
    return itype


def instance_type_update(*, actor: object | None, instance_type: InstanceType, **changes: object) -> InstanceType:
    """Change an instance type's sizes, name, default or active flag. Instances keep the sizes they were made with
    (they copy them); only new requests see the change. The default must stay offered: deactivating it, or taking
    the default away without giving it to another, is a Conflict ``instance-type-default``."""
    allowed = {"name", "vcpus", "ram_mib", "swap_mib", "root_gib", "is_default", "is_active"}
    unknown = set(changes) - allowed
    if unknown:
        raise ApplicationError(f"cannot change {', '.join(sorted(unknown))}", code="instance-type-field")
    with transaction.atomic():
        itype = InstanceType.objects.select_for_update().get(pk=instance_type.pk)
        instance_type_check(changes, current=itype)
        if "name" in changes and InstanceType.objects.filter(name=changes["name"]).exclude(pk=itype.pk).exists():
            raise Conflict(f"an instance type named {changes['name']} exists already", code="instance-type-exists")
        is_default = bool(changes.get("is_default", itype.is_default))
        before = {field: getattr(itype, field) for field in changes}
        if is_default and not itype.is_default:
            _default_take(itype)
        for field, value in changes.items():
            setattr(itype, field, value)
        itype.save()
        audit.record(
            actor,
            "compute.instance_type.updated",
            itype,
            changes={field: [before[field], value] for field, value in changes.items() if before[field] != value},
        )
    return itype


def instance_type_retire(*, actor: object | None, instance_type: InstanceType) -> InstanceType | None:
    """Stop offering an instance type: deleted when no instance (even a terminated one) was made from it, else
    deactivated (kept for the instances' records and usage). Returns the deactivated type, None when deleted.
    The default type cannot be retired (Conflict ``instance-type-default``)."""
    with transaction.atomic():
        itype = InstanceType.objects.select_for_update().get(pk=instance_type.pk)
        if itype.is_default:
            raise Conflict(
                f"{itype.name} is the default instance type: make another type the default before retiring it",
                code="instance-type-default",
            )
        if not Instance.objects.filter(instance_type=itype).exists():
            audit.record(actor, "compute.instance_type.deleted", itype, name=itype.name)
            itype.delete()
            return None
        if itype.is_active:
            itype.is_active = False
            itype.save(update_fields=["is_active"])
            audit.record(actor, "compute.instance_type.deactivated", itype, name=itype.name)
        return itype


# A host's name is part of its worker queue ``host.<name>`` and of log lines: one token, no spaces or wildcards.
HOST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$")
# Overcommit ratios a site may set (the columns hold 5 digits, 2 decimals).
RATIO_MIN, RATIO_MAX = Decimal("0.01"), Decimal("100")


def _ratio(value: Decimal | float | str, *, what: str) -> Decimal:
    try:
        ratio = Decimal(str(value)).quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        raise ApplicationError(f"the {what} allocation ratio {value!r} is not a number", code="host-ratio") from None
    if not RATIO_MIN <= ratio <= RATIO_MAX:
        raise ApplicationError(
            f"the {what} allocation ratio must be {RATIO_MIN} to {RATIO_MAX}, got {value}", code="host-ratio"
        )
    return ratio


def host_register(
    *,
    actor: object | None,
    name: str,
    uri: str,
    cpu_allocation_ratio: Decimal | float | str | None = None,
    ram_allocation_ratio: Decimal | float | str | None = None,
) -> Host:
    """Register the libvirt host at ``uri`` with the capacity it reports and the overcommit ratios given (the
    model's defaults otherwise). The input is checked and the host probed before the transaction; a host already
    registered under that name or URI is a conflict."""
    if not HOST_NAME.match(name):
        raise ApplicationError(
            f"{name!r} is not a valid host name: 1 to 100 letters, digits, dots, hyphens and underscores, "
            "starting and ending with a letter or digit (it names the worker queue host.<name>)",
            code="host-name",
        )
    ratios = {}  # those not given take the model's defaults
    if cpu_allocation_ratio is not None:
        ratios["cpu_allocation_ratio"] = _ratio(cpu_allocation_ratio, what="CPU")
    if ram_allocation_ratio is not None:
        ratios["ram_allocation_ratio"] = _ratio(ram_allocation_ratio, what="RAM")
    try:
        info = hypervisor.host_info(uri)
    except hypervisor.HostUnreachable as exc:
        raise Unavailable(f"{exc}; try again when the host is up.", code="host-unreachable") from None
    except hypervisor.HypervisorRefused as exc:
        raise ApplicationError(str(exc), code="host-refused") from None
    with transaction.atomic():
        if Host.objects.filter(uri=uri).exists():
            raise Conflict(f"a host with URI {uri} is already registered", code="host-exists")
        if Host.objects.filter(name=name).exists():
            raise Conflict(f"a host named {name} is already registered", code="host-exists")
        host = Host.objects.create(name=name, uri=uri, vcpus=info.vcpus, ram_mib=info.ram_mib, **ratios)
        host.refresh_from_db()  # the ratios as stored (two decimals)
        audit.record(
            actor,
            "compute.host.registered",
            host,
            uri=uri,
            vcpus=info.vcpus,
            ram_mib=info.ram_mib,
            cpu_allocation_ratio=str(host.cpu_allocation_ratio),
            ram_allocation_ratio=str(host.ram_allocation_ratio),
        )
    return host


def host_maintenance_set(*, actor: User, host: Host, maintenance: bool, reason: str = "") -> Host:
    """Put ``host`` into maintenance (the scheduler places no new VM on it; those running stay) or take it out
    (staff only). Setting the state it already has is a Conflict ``host-maintenance``, so two admins acting at
    once learn that the other was first. ``reason`` goes to the audit entry."""
    if not getattr(actor, "is_staff", False):
        raise PermissionDenied("only site administrators put hosts into maintenance")
    with transaction.atomic():
        return transition(
            Host,
            pk=host.pk,
            allowed={"maintenance": [not maintenance]},
            changes={"maintenance": maintenance},
            actor=actor,
            action="compute.host.maintenance_set" if maintenance else "compute.host.maintenance_cleared",
            code="host-maintenance",
            refusal=lambda row: f"host {row.name} is {'already' if row.maintenance else 'not'} in maintenance",
            details={"reason": reason.strip()[:500]} if reason.strip() else None,
        )


# A VM's name becomes its hostname (cloud-init ``local-hostname``): one DNS label.
INSTANCE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# States of an instance that never had a domain on its host: terminating it needs no worker.
NEVER_RAN = (InstanceState.PENDING, InstanceState.SCHEDULED)


def _chosen_ssh_keys(*, actor: User, chosen: Sequence[int | str]) -> list[SshKey]:
    """The actor's own stored keys named by id or fingerprint, in the order given (no duplicates)."""
    mine = list(SshKey.objects.filter(user=actor))
    by_id = {str(k.pk): k for k in mine}
    by_fingerprint = {k.fingerprint: k for k in mine}
    keys: list[SshKey] = []
    for choice in chosen:
        key = by_id.get(str(choice).strip()) or by_fingerprint.get(str(choice).strip())
        if key is None:
            raise ApplicationError(f"{choice} is not one of your SSH keys", code="ssh-key-unknown")
        if key not in keys:
            keys.append(key)
    return keys


def _validate_request(
    *, image: Image, instance_type: InstanceType, network: str, user_data: str, volatile_gib: int, name: str
) -> Network:
    """Refuse bad input (ApplicationError with a code); returns the network the lease is taken from."""
    if not INSTANCE_NAME.match(name):
        raise ApplicationError(
            f"{name!r} is not a valid instance name: 1 to 63 letters, digits and hyphens, "
            "starting and ending with a letter or digit",
            code="instance-name",
        )
    if image.kind != "machine":
        raise ApplicationError(
            f"image {image.identifier} is a {image.kind or 'disk'} image; only machine images boot a VM",
            code="image-not-machine",
        )
    if not instance_type.is_active:
        raise ApplicationError(f"instance type {instance_type.name} is not offered any more", code="instance-type")
    if network not in NetworkKind.values:
        raise ApplicationError(
            f"unknown network {network!r}; choose one of {', '.join(NetworkKind.values)}", code="network-unknown"
        )
    found = Network.objects.filter(kind=network).order_by("pk").first()
    if found is None:
        raise ApplicationError(f"this site has no {network} network", code="network-unknown")
    size = len(user_data.encode())
    if size > settings.COMPUTE_USER_DATA_MAX_BYTES:
        raise ApplicationError(
            f"user data is {size} bytes; at most {settings.COMPUTE_USER_DATA_MAX_BYTES} are allowed",
            code="user-data-too-large",
        )
    if isinstance(volatile_gib, bool) or not 0 <= volatile_gib <= settings.COMPUTE_VOLATILE_MAX_GIB:
        raise ApplicationError(
            f"volatile disk size must be 0 to {settings.COMPUTE_VOLATILE_MAX_GIB} GiB, got {volatile_gib}",
            code="volatile-size",
        )
    return found


def instance_request(
    *,
    actor: User,
    project: Project,
    image: Image,
    instance_type: InstanceType,
    network: str,
    name: str,
    ssh_keys: Sequence[int | str] = (),
    user_data: str = "",
    volatile_gib: int = 0,
    volumes: Sequence[str] = (),
) -> Instance:
    """Request a VM: check membership, the site policy and the input, then in one transaction reserve
    quota, place it on a host, give it a lease (and, on ``local``, front-end ports: ``compute.access``) and its image's
    firewall rules, reserve the ``volumes`` named (their ids; attached at boot) and
    order its volatile disk from storage. The instance is created ``scheduled`` (the host is chosen here); the
    worker steps start after commit.

    Errors: NotFound (not a member of ``project``, or a volume missing or not visible), PermissionDenied
    ``policy-denied``, ApplicationError (bad input), QuotaExceeded, Conflict ``no-host`` / ``no-free-address`` /
    ``no-free-port`` / ``volume-unavailable``. Nothing is written on error."""
    project = account_selectors.project_access_check(actor=actor, project=project)
    decision = evaluate(image, on_use=True, actor=actor)
    failed = [asdict(r) for r in decision.failures]
    if not decision.allowed:
        raise PermissionDenied(
            f"the site policy refuses image {image.identifier}: {decision.summary}",
            code="policy-denied",
            extra={"rules": failed},
        )
    lease_network = _validate_request(
        image=image,
        instance_type=instance_type,
        network=network,
        user_data=user_data,
        volatile_gib=volatile_gib,
        name=name,
    )
    keys = _chosen_ssh_keys(actor=actor, chosen=ssh_keys)
    warnings = failed if decision.mode == "warn" else []
    volume_ids = [str(storage_selectors.parse_volume_id(volume_id)) for volume_id in volumes]
    if len(set(volume_ids)) != len(volume_ids):
        raise ApplicationError("a volume is named twice in volumes", code="volume-duplicate")

    tx = transaction.atomic(durable=True)
    with tx:
        quota_reserve(
            project=project,
            request={
                "instances": 1,
                "vcpus": instance_type.vcpus,
                "ram_mib": instance_type.ram_mib,
                "public_ips": 1 if network == NetworkKind.PUBLIC else 0,
            },
            within=tx,
        )
        host = scheduler.place(instance_type=instance_type)
        instance = Instance.objects.create(
            name=name,
            project=project,
            created_by=actor,
            image=image,
            image_identifier=image.identifier,
            instance_type=instance_type,
            vcpus=instance_type.vcpus,
            ram_mib=instance_type.ram_mib,
            root_gib=instance_type.root_gib,
            swap_mib=instance_type.swap_mib,
            volatile_gib=volatile_gib,
            host=host,
            network=network,
            state=InstanceState.SCHEDULED,
            ssh_keys=[k.public_key for k in keys],
            user_data=user_data,
            policy_warnings=warnings,
            allowed_by=list(decision.allowed_by),
        )
        lease = lease_take(network_kind=network, instance=instance, network=lease_network)
        translations = access.port_translations_reserve(instance=instance, image=image)
        firewalls.firewall_defaults_create(instance=instance, image=image)
        attached = attachments.attachments_at_request(
            actor=actor, instance=instance, volume_ids=volume_ids, volatile_gib=volatile_gib
        )
        audit.record(
            actor,
            "compute.instance.requested",
            instance,
            project=project.pk,
            image=image.identifier,
            instance_type=instance_type.name,
            host=host.name,
            network=network,
            ip=lease.ip,
            ssh_fingerprints=[k.fingerprint for k in keys],
            user_data_bytes=len(user_data.encode()),
            policy_warnings=[w["rule"] for w in warnings],
            volumes={a.device: str(a.volume_uuid) for a in attached},
            ports={t.guest_port: t.front_port for t in translations},
        )
        access.frontend_sync_on_commit()
        # The first worker step (prepare) goes to the host's queue once the instance is committed.
        transaction.on_commit(lambda: execution.enqueue(execution.PREPARE, instance))
    return instance


def instance_terminate(*, actor: User, instance: Instance) -> Instance:
    """Terminate ``instance`` (the caller has checked the actor may act on it). One that never ran
    (``pending``/``scheduled``) ends at once: ``terminated``, its lease freed and its quota back. Any other
    live one goes to ``terminating`` and the worker tears it down (``compute.instance_terminate``)."""
    with transaction.atomic():
        try:
            ended = transition(
                Instance,
                pk=instance.pk,
                allowed={"state": NEVER_RAN},
                changes={"state": InstanceState.TERMINATED, "state_message": ""},
                actor=actor,
                action="compute.instance.terminated",
                code="instance-state",
            )
        except Conflict:
            pass
        else:
            lease_free(ended)
            access.port_translations_free(ended)
            access.frontend_sync_on_commit()
            attachments.attachments_release(ended)
            return ended
        terminating = transition(
            Instance,
            pk=instance.pk,
            allowed={"state": [s for s in InstanceState.values if s not in (*NEVER_RAN, "terminating", "terminated")]},
            changes={"state": InstanceState.TERMINATING, "state_message": ""},
            actor=actor,
            action="compute.instance.terminating",
            code="instance-state",
            refusal=lambda row: f"instance {row.name} is {row.state} already",
        )
        execution.teardown_on_commit(terminating)
        return terminating
