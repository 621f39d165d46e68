"""The worker steps that make an instance run on its host, and the actions on a running one (DESIGN §4).

Each step is a service called by one thin task (``compute/tasks.py``) on the host's queue ``host.<name>``:
it re-reads the instance, returns early when its work is done or no longer wanted, does its slow I/O
(image cache, qemu-img, libvirt) outside any transaction and finishes with one conditional transition.
A step re-run after a worker died mid-step repeats safely: files are made idempotently, defining and
starting a domain twice is harmless.

Flow: ``scheduled → preparing`` (image cache, policy again, disks, seed ISO) ``→ booting`` (define
``alto-<uuid>`` and start it) ``→ running`` (libvirt says so: at once in the boot step as a rule, else polled by
the wait step). Actions: start (``stopped → booting``),
shutdown (``running → stopping → stopped``, ACPI then polling), kill (``→ stopping``, destroy ``→ stopped``),
reboot (``running``), terminate (``→ terminating``, destroy, undefine, root disk to quarantine ``→ terminated``,
lease freed). A step that fails for good puts the instance in ``error`` with the message; its lease (and its
files and domain, if any) are kept until it is terminated."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from celery import current_app, current_task
from celery.exceptions import TimeoutError as CeleryTimeout
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from compute import access, attachments, hypervisor, networks, swap
from compute.contextualisation import NetworkConfig, seed_iso
from compute.domain import DiskSpec, DomainSpec, NicSpec, domain_xml
from compute.models import Attachment, Host, Instance, InstanceState, Lease
from core.errors import ApplicationError, Conflict, NotFound, Unavailable
from core.workflow import transition
from marketplace.policy.evaluation import evaluate
from storage.backends import qemu_img
from storage.images import image_cache_ensure

logger = logging.getLogger(__name__)

S = InstanceState
PREPARE = "compute.instance_prepare"
BOOT = "compute.instance_boot"
WAIT_RUNNING = "compute.instance_wait_running"
SHUTDOWN = "compute.instance_shutdown"
WAIT_STOPPED = "compute.instance_wait_stopped"
KILL = "compute.instance_kill"
REBOOT = "compute.instance_reboot"
TERMINATE = "compute.instance_terminate"
# The swap disk: a raw file in the instance's folder, on the last virtio name so that it never takes the name of a
# volume (the guest finds it by its label, not by its device name).
SWAP_FILE = "swap.img"
SWAP_TARGET = swap.TARGET
# States a failed step may leave for ``error`` (terminated is final; error already is).
FAILABLE = [s for s in S.values if s not in (S.TERMINATED, S.ERROR)]


def domain_name(instance: Instance) -> str:
    return f"alto-{instance.uuid}"


def instance_dir(instance: Instance) -> Path:
    return Path(settings.INSTANCE_DIR) / str(instance.uuid)


def templates_dir() -> Path:
    """Where a host keeps the files its VMs' disks are copied from (root overlays, swap disks), made once each."""
    return Path(settings.INSTANCE_DIR) / ".templates"


def root_overlay_create(*, backing: Path, path: Path, size_gib: int) -> None:
    """The root disk at ``path``: a qcow2 overlay on the cached image ``backing`` of ``size_gib`` GiB (or the image's
    size, if larger). qemu-img makes it once per version of the cached file and size, as a template in
    :func:`templates_dir`; each VM's overlay is a copy of it. A qcow2 header names its backing file and sizes, not
    itself, so the copy holds the very bytes ``qemu-img create`` would write at ``path``, without starting a process per
    VM. Idempotent as :func:`qemu_img.overlay_create`: an existing overlay on ``backing`` is kept, any other file
    refused."""
    backing = backing.resolve()
    if path.exists():
        qemu_img.overlay_create(backing=backing, path=path, size_gib=size_gib)
        return
    st = backing.stat()
    version = f"{backing}\0{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}\0{size_gib}"
    template = templates_dir() / f"root-{hashlib.sha256(version.encode()).hexdigest()[:32]}.qcow2"
    if not template.exists():
        template.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Made under a name of its own, then renamed: two workers making it at once each rename a complete one.
        made = template.with_name(f".{template.stem}.{uuid.uuid4().hex}.qcow2")
        try:
            qemu_img.overlay_create(backing=backing, path=made, size_gib=size_gib)
            made.replace(template)
        finally:
            made.unlink(missing_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        shutil.copyfile(template, partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def _host(instance: Instance) -> Host:
    if instance.host is None:
        raise ApplicationError(f"instance {instance.name} has no host", code="instance-no-host")
    return instance.host


def host_queue(instance: Instance) -> str:
    return f"host.{_host(instance).name}"


def enqueue(step: str, instance: Instance, *, countdown: float | None = None) -> None:
    """Send ``step`` for ``instance`` to its host's queue (call after commit). No one waits for a step's result
    (its outcome is the instance's state), so none is asked for: the sender does not subscribe to it in the
    result backend and the worker does not store it."""
    current_app.send_task(step, args=[instance.pk], queue=host_queue(instance), countdown=countdown, ignore_result=True)


CONSOLE = "compute.instance_console"


def instance_console_tail(instance_id: int, *, max_bytes: int) -> str:
    """On the instance's host: the last ``max_bytes`` of its serial console log (empty before the guest has
    printed anything), decoded leniently (a guest prints what it likes)."""
    path = instance_dir(_get(instance_id)) / "console.log"
    try:
        with open(path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - max_bytes))
            return log.read(max_bytes).decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def instance_console(*, instance: Instance, max_bytes: int) -> str:
    """Ask the worker of the instance's host for the tail of its console log and wait for the answer (as Nova's API
    asks nova-compute for console output): the log lives on the host. Unavailable when no worker answers within
    ``COMPUTE_CONSOLE_TIMEOUT`` seconds."""
    host = _host(instance)
    result = current_app.send_task(CONSOLE, args=[instance.pk, max_bytes], queue=host_queue(instance))
    try:
        text = str(result.get(timeout=settings.COMPUTE_CONSOLE_TIMEOUT))
    except CeleryTimeout:
        raise Unavailable(
            f"host {host.name} did not answer within {settings.COMPUTE_CONSOLE_TIMEOUT} s; try again shortly",
            code="host-unavailable",
        ) from None
    result.forget()  # read once: the result backend need not keep it
    return text


def _enqueue_on_commit(step: str, instance: Instance) -> None:
    transaction.on_commit(lambda: enqueue(step, instance))


def _get(instance_id: int, *, image: bool = True) -> Instance:
    """The instance with what a step reads of it: its host, image (unless not ``image``: read when used) and lease
    (with the lease's network)."""
    related = ("host", "image", "lease__network") if image else ("host", "lease__network")
    return Instance.objects.select_related(*related).get(pk=instance_id)


def _lease(instance: Instance) -> Lease:
    """The instance's lease, with its network: as read with the instance by :func:`_get`, else read now."""
    try:
        lease = instance.lease
    except Lease.DoesNotExist:
        lease = None
    if lease is None or not Lease.network.is_cached(lease):
        return Lease.objects.select_related("network").get(instance=instance)
    return lease


def _worker() -> dict[str, str]:
    """The Celery worker running this step (``name@host``), for the audit entry; empty outside a worker."""
    hostname = getattr(getattr(current_task, "request", None), "hostname", None)
    return {"worker": hostname} if hostname else {}


def _move(instance: Instance, *, allowed: list[str], to: str, verb: str, actor: Any = None, **details: Any) -> Instance:
    if actor is None:
        details = {**_worker(), **details}
    with transaction.atomic():
        return transition(
            Instance,
            pk=instance.pk,
            allowed={"state": allowed},
            changes={"state": to, "state_message": ""},
            actor=actor,
            action=f"compute.instance.{verb}",
            code="instance-state",
            refusal=lambda row: f"instance {row.name} is {row.state}",
            details=details,
            # A worker step (no actor): its copy, read at the start of the step with its host and lease, takes the
            # change instead of the row being read again. Past its request only an instance's state columns change
            # (by conditional updates like this one) and allowed_by (by the prepare step itself), so the copy is
            # the row as it now stands.
            row=instance if actor is None else None,
        )


def instance_fail(instance_id: int, *, message: str) -> None:
    """Put the instance in ``error`` with ``message`` (a step failed for good). Its lease, files and domain
    stay until it is terminated. An instance already terminated or in error is left alone."""
    with transaction.atomic():
        try:
            transition(
                Instance,
                pk=instance_id,
                allowed={"state": FAILABLE},
                changes={"state": S.ERROR, "state_message": message[:4000]},
                actor=None,
                action="compute.instance.error",
                code="instance-state",
                details={"message": message[:4000], **_worker()},
            )
        except (Conflict, NotFound):
            logger.info("instance %s failed (%s) but is gone or no longer in a state to fail", instance_id, message)


# Steps ------------------------------------------------------------------------------------------------------


def instance_prepare(instance_id: int) -> bool:
    """``scheduled → preparing``: cache the image, check the policy again, make the root overlay, the swap disk
    and the seed ISO in ``INSTANCE_DIR/<uuid>/`` (volumes, the volatile disk included, are storage's); then send
    the boot step. False when not wanted."""
    instance = _get(instance_id)
    if instance.state == S.SCHEDULED:
        instance = _move(instance, allowed=[S.SCHEDULED], to=S.PREPARING, verb="preparing")
    elif instance.state != S.PREPARING:
        return False
    cached = image_cache_ensure(identifier=instance.image_identifier)
    decision = evaluate(instance.image, on_use=True)
    if not decision.allowed:
        reasons = decision.summary
        instance_fail(instance_id, message=f"the site policy refuses image {instance.image_identifier}: {reasons}")
        return False
    # The decision at the moment of use is the one that counts (DESIGN §2.4): so are the entries that allowed it.
    allowed_by = list(decision.allowed_by)
    if allowed_by != instance.allowed_by:  # as a rule the same entries as at the request: nothing to write then
        instance.allowed_by = allowed_by
        Instance.objects.filter(pk=instance.pk).update(allowed_by=allowed_by)
    where = instance_dir(instance)
    where.mkdir(parents=True, exist_ok=True)
    root_overlay_create(backing=Path(cached.path), path=where / "root.qcow2", size_gib=instance.root_gib)
    if instance.swap_mib:
        swap.swap_disk_create(path=where / SWAP_FILE, size_mib=instance.swap_mib, template_dir=templates_dir())
    lease = _lease(instance)
    prefix = lease.network.cidr.split("/")[1]
    iso = seed_iso(
        instance_uuid=instance.uuid,
        hostname=instance.name.lower(),
        ssh_keys=list(instance.ssh_keys),
        user_data=instance.user_data or None,
        network=NetworkConfig(
            mac=lease.mac,
            address=f"{lease.ip}/{prefix}",
            gateway=lease.network.gateway,
            dns=tuple(lease.network.dns),
            address6=f"{lease.ipv6}/{lease.network.ipv6_cidr.split('/')[1]}" if lease.ipv6 else None,
            gateway6=lease.network.ipv6_gateway or None,
        ),
        swap_label=swap.LABEL if instance.swap_mib else None,
    )
    partial = where / "seed.iso.partial"
    partial.write_bytes(iso)
    partial.replace(where / "seed.iso")
    enqueue(BOOT, instance)
    return True


def _spec(instance: Instance, volumes: list[Attachment] | None = None) -> DomainSpec:
    """The domain of ``instance`` with its ``volumes`` (:func:`attachments.boot_attachments`; read now if None)."""
    where = instance_dir(instance).resolve()
    lease = _lease(instance)
    disks = [DiskSpec(target="vda", path=str(where / "root.qcow2"))]
    # The volumes (volatile disk included) come from storage, on the devices their attachments picked.
    disks.extend(attachments.boot_disks(instance, volumes))
    if instance.swap_mib:
        disks.append(DiskSpec(target=SWAP_TARGET, path=str(where / SWAP_FILE), format="raw"))
    return DomainSpec(
        name=domain_name(instance),
        uuid=instance.uuid,
        vcpus=instance.vcpus,
        ram_mib=instance.ram_mib,
        console_log=str(where / "console.log"),
        disks=tuple(disks),
        nic=NicSpec(bridge=lease.network.bridge, mac=lease.mac),
        seed_iso=str(where / "seed.iso"),
        domain_type="kvm" if settings.LIBVIRT_DOMAIN_TYPE == "kvm" else "qemu",
    )


def instance_boot(instance_id: int) -> bool:
    """``preparing → booting`` (a start comes ``stopped → booting``): define ``alto-<uuid>`` and start it, then
    ``→ running`` when libvirt says it runs, else send the wait step. False when not wanted."""
    instance = _get(instance_id, image=False)
    if instance.state == S.PREPARING:
        instance = _move(instance, allowed=[S.PREPARING], to=S.BOOTING, verb="booting")
    elif instance.state != S.BOOTING:
        return False
    # The network the NIC joins runs on the host, and its DHCP answers the lease's address to the NIC's MAC.
    networks.host_network_ensure(host=_host(instance), lease=_lease(instance))
    volumes = attachments.boot_attachments(instance)
    hypervisor.domain_define(_host(instance).uri, domain_xml(_spec(instance, volumes)))
    attachments.boot_settle(instance, volumes)
    hypervisor.domain_start(_host(instance).uri, domain_name(instance))
    # libvirt's start returns once the domain runs, as a rule: then it is ``running`` now, without another task;
    # a domain that does not run yet is polled by the wait step.
    if not _running_if_up(instance):
        enqueue(WAIT_RUNNING, instance)
    return True


def _running_if_up(instance: Instance) -> bool:
    """``booting → running`` if libvirt says the domain runs; False when it does not run yet."""
    if hypervisor.domain_state(_host(instance).uri, domain_name(instance)) != hypervisor.RUNNING:
        return False
    with contextlib.suppress(Conflict):
        _move(instance, allowed=[S.BOOTING], to=S.RUNNING, verb="running")
    return True


def instance_wait_running(instance_id: int) -> bool | None:
    """``booting → running`` once libvirt says the domain runs. True: done (or not wanted any more);
    False: not yet, ask again later."""
    instance = _get(instance_id)
    if instance.state != S.BOOTING:
        return True
    return _running_if_up(instance)


def instance_stop_apply(instance_id: int, *, kill: bool) -> bool:
    """For an instance ``stopping``: ask the guest to shut down (ACPI), or pull the plug when ``kill``. False
    when not wanted."""
    instance = _get(instance_id)
    if instance.state != S.STOPPING:
        return False
    if kill:
        hypervisor.domain_destroy(_host(instance).uri, domain_name(instance))
    else:
        hypervisor.domain_shutdown(_host(instance).uri, domain_name(instance))
    return True


def instance_wait_stopped(instance_id: int) -> bool:
    """``stopping → stopped`` once the domain is off. True: done (or not wanted); False: ask again later."""
    instance = _get(instance_id)
    if instance.state != S.STOPPING:
        return True
    if hypervisor.domain_state(_host(instance).uri, domain_name(instance)) not in (
        hypervisor.SHUT_OFF,
        hypervisor.ABSENT,
    ):
        return False
    with contextlib.suppress(Conflict):
        _move(instance, allowed=[S.STOPPING], to=S.STOPPED, verb="stopped")
    return True


def instance_reboot_apply(instance_id: int) -> None:
    """Ask a running instance's guest to reboot (ACPI)."""
    instance = _get(instance_id)
    if instance.state == S.RUNNING and instance.host is not None:
        hypervisor.domain_reboot(_host(instance).uri, domain_name(instance))


def instance_teardown(instance_id: int) -> bool:
    """``terminating → terminated``: destroy and undefine the domain, move ``root.qcow2`` to
    ``QUARANTINE_DIR/<uuid>.qcow2`` (purged later), delete the rest, release its volumes, free the lease. False when
    not wanted."""
    instance = _get(instance_id)
    if instance.state != S.TERMINATING:
        return False
    if instance.host is not None:
        hypervisor.domain_destroy(_host(instance).uri, domain_name(instance))
        hypervisor.domain_undefine(_host(instance).uri, domain_name(instance))
    where = instance_dir(instance)
    root = where / "root.qcow2"
    if root.exists():
        quarantine = Path(settings.QUARANTINE_DIR)
        quarantine.mkdir(parents=True, exist_ok=True)
        root.replace(quarantine / f"{instance.uuid}.qcow2")
    shutil.rmtree(where, ignore_errors=True)
    # Persistent volumes go back available with their data; the volatile disk is destroyed by storage.
    attachments.attachments_release(instance)
    lease = Lease.objects.select_related("network").filter(instance=instance).first()
    if lease is not None and instance.host is not None:
        networks.host_network_release(host=instance.host, lease=lease)
    with transaction.atomic():
        try:
            ended = transition(
                Instance,
                pk=instance.pk,
                allowed={"state": [S.TERMINATING]},
                changes={"state": S.TERMINATED, "state_message": ""},
                actor=None,
                action="compute.instance.terminated",
                code="instance-state",
            )
        except Conflict:
            return False
        networks.lease_free(ended)
        access.port_translations_free(ended)
        access.frontend_sync_on_commit()
    return True


# Actions (the caller has checked the actor may act on the instance) ----------------------------------------


def instance_start(*, actor: User, instance: Instance) -> Instance:
    """``stopped → booting``, then the boot step on the host. Conflict ``instance-state`` otherwise."""
    with transaction.atomic():
        started = _move(instance, allowed=[S.STOPPED], to=S.BOOTING, verb="start", actor=actor)
        _enqueue_on_commit(BOOT, started)
    return started


def instance_shutdown(*, actor: User, instance: Instance) -> Instance:
    """``running → stopping``; the worker presses the ACPI button and waits for the domain to be off."""
    with transaction.atomic():
        stopping = _move(instance, allowed=[S.RUNNING], to=S.STOPPING, verb="shutdown", actor=actor)
        _enqueue_on_commit(SHUTDOWN, stopping)
    return stopping


def instance_kill(*, actor: User, instance: Instance) -> Instance:
    """``running/booting/stopping → stopping``; the worker destroys the domain (pulls the plug) → ``stopped``."""
    with transaction.atomic():
        stopping = _move(instance, allowed=[S.RUNNING, S.BOOTING, S.STOPPING], to=S.STOPPING, verb="kill", actor=actor)
        _enqueue_on_commit(KILL, stopping)
    return stopping


def instance_reboot(*, actor: User, instance: Instance) -> Instance:
    """A running instance's guest is asked to reboot; it stays ``running``."""
    with transaction.atomic():
        running = _move(instance, allowed=[S.RUNNING], to=S.RUNNING, verb="reboot", actor=actor)
        _enqueue_on_commit(REBOOT, running)
    return running


def teardown_on_commit(instance: Instance) -> None:
    _enqueue_on_commit(TERMINATE, instance)


# The step to send again for an instance found in a worker state whose message may have died with a worker. A
# ``stopping`` one gets the ACPI button again (harmless on a domain already going down or off), then the wait; which
# of shutdown or kill was asked is not kept, and the gentler one is the safe guess.
RESUME_STEP: dict[str, str] = {
    S.SCHEDULED.value: PREPARE,
    S.PREPARING.value: PREPARE,
    S.BOOTING.value: BOOT,
    S.STOPPING.value: SHUTDOWN,
    S.TERMINATING.value: TERMINATE,
}


def steps_resume(*, host_names: list[str]) -> int:
    """Send again the current step of every instance on ``host_names`` that is in a worker state; returns how many.

    Called when a worker starts consuming those hosts' queues: a worker killed mid-step (SIGKILL, power loss)
    takes its message with it on the filesystem broker, and Redis gives it back only after its visibility
    timeout. Steps are idempotent and return early when their work is done, so a step that was not lost (still
    queued, or redelivered later) only runs once more to no effect."""
    instances = list(
        Instance.objects.select_related("host")
        .filter(host__name__in=host_names, state__in=list(RESUME_STEP))
        .order_by("pk")
    )
    for instance in instances:
        step = RESUME_STEP[instance.state]
        logger.info("instance %s is %s on %s: sending %s again", instance.pk, instance.state, instance.host, step)
        enqueue(step, instance)
    return len(instances)
