"""How users reach their VMs: port translation on the front end and the nftables rules that carry it (with the VMs'
firewalls, :mod:`compute.firewalls`).

A VM on the ``local`` network has no address the outside can reach. When it is requested it gets, for each of its
image's ``inbound-port`` values that the site allows (``PORT_TRANSLATION_PORTS``), a front-end port from
``PORT_TRANSLATION_RANGE`` (a :class:`~compute.models.PortTranslation` row; the unique constraint on the front-end
address and port makes giving a port twice impossible, however many requests race). The rows are deleted when the
VM ends. The front end's worker (queue ``FRONTEND_QUEUE``) makes the nftables table ``ip altostratus`` say exactly
what the database says (:func:`frontend_sync`): after every change, and periodically, which also restores the rules
after a reboot of the front end or a hand edit."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction

from compute import packetfilter
from compute.models import LIVE_STATES, FirewallProtocol, FirewallRule, Instance, Lease, NetworkKind, PortTranslation
from core.errors import Conflict
from marketplace.models import Entry, Image

logger = logging.getLogger(__name__)

FRONTEND_SYNC = "compute.frontend_sync"
# The ports services answer on by default: a link to one of them leaves the port out.
_DEFAULT_PORTS = {"ssh": 22, "http": 80, "https": 443}
# Names of the well-known ports, for the links shown to users; others are shown as their number.
SERVICES = {22: "ssh", 80: "http", 443: "https", 3389: "rdp", 5900: "vnc", 8080: "http", 8443: "https"}
# How often one request tries another random free port after a concurrent request took the one it picked.
RESERVE_ATTEMPTS = 20


def image_metadata(image: Image) -> dict[str, Any]:
    """What the image's newest current entry says beyond its columns (ports, icmp, …). Read once per ``image``
    object: a request asks for its ports and its firewall from the same copy."""
    details = image.__dict__.get("_current_entry_details")
    if details is None:
        entry = Entry.objects.filter(image=image, is_latest=True).order_by("-created", "-pk").only("details").first()
        details = image.__dict__["_current_entry_details"] = dict(entry.details) if entry is not None else {}
    return dict(details)


def image_inbound_ports(image: Image) -> list[int]:
    """The ports the image says it serves (``slterms:inbound-port``), sorted, without duplicates."""
    return sorted({int(port) for port in image_metadata(image).get("inbound_ports", []) if 0 < int(port) < 65536})


def translated_ports(image: Image) -> list[int]:
    """The image's inbound ports that the site translates (``PORT_TRANSLATION_PORTS``)."""
    allowed = set(settings.PORT_TRANSLATION_PORTS)
    return [port for port in image_inbound_ports(image) if port in allowed]


def port_translations_reserve(*, instance: Instance, image: Image) -> list[PortTranslation]:
    """Give ``instance`` (on ``local``) a free front-end port for each of :func:`translated_ports` of ``image``.
    Nothing when port translation is off (no ``PORT_TRANSLATION_HOST``) or the VM is on another network.

    Precondition: inside the transaction that creates ``instance``. Each port is taken in a savepoint: a
    concurrent request that took the same port first makes the insert fail (unique constraint; PostgreSQL makes the
    second inserter wait for the first to commit), and another random free port is tried. Conflict
    ``no-free-port`` when the range is full."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("port_translations_reserve() must run inside transaction.atomic()")
    if not settings.PORT_TRANSLATION_HOST or instance.network != NetworkKind.LOCAL:
        return []
    address = settings.PORT_TRANSLATION_ADDRESS
    low, high = settings.PORT_TRANSLATION_RANGE
    made = []
    for guest_port in translated_ports(image):
        for _attempt in range(RESERVE_ATTEMPTS):
            taken = set(
                PortTranslation.objects.filter(front_address=address, front_port__range=(low, high)).values_list(
                    "front_port", flat=True
                )
            )
            free = [port for port in range(low, high + 1) if port not in taken]
            if not free:
                raise Conflict(
                    f"every front-end port of {low}-{high} is in use; no port translation is free",
                    code="no-free-port",
                )
            # A random free port rather than the lowest: racing requests rarely pick the same one.
            port = secrets.choice(free)
            try:
                with transaction.atomic():
                    made.append(
                        PortTranslation.objects.create(
                            instance=instance,
                            service=SERVICES.get(guest_port, str(guest_port)),
                            guest_port=guest_port,
                            front_address=address,
                            front_port=port,
                        )
                    )
                break
            except IntegrityError:
                continue
        else:
            raise Conflict("the front-end ports are busy; try again", code="no-free-port")
    return made


def port_translations_free(instance: Instance) -> int:
    """Give back ``instance``'s front-end ports (the rules go at the next :func:`frontend_sync`); how many."""
    deleted, _ = PortTranslation.objects.filter(instance=instance).delete()
    return deleted


def _link(*, service: str, host: str, port: int, default_port: int | None = None) -> dict[str, Any]:
    """One way in: ``{"service", "host", "port"}``, with ``"url"`` for web services and ``"command"`` for ssh; the
    port is left out of both where it is the service's own (``default_port``)."""
    shown = f"[{host}]" if ":" in host else host
    link: dict[str, Any] = {"service": service, "host": host, "port": port}
    if service in ("http", "https"):
        link["url"] = f"{service}://{shown}/" if port == default_port else f"{service}://{shown}:{port}/"
    elif service == "ssh":
        link["command"] = f"ssh root@{host}" if port == default_port else f"ssh -p {port} root@{host}"
    return link


def access_links(instance: Instance) -> list[dict[str, Any]]:
    """How anyone outside reaches the live ``instance``, as far as anyone can: on ``local``, its translated
    front-end ports (when port translation is on); on ``public``, its own address at each well-known tcp port its
    firewall lets in; on ``private``, nothing (nobody outside reaches those addresses). The API, the CLI and the
    portal all show these. Reads the prefetched ``port_translations``, ``firewall_rules`` and ``lease`` when there."""
    if not instance.is_live:
        return []
    if instance.network == NetworkKind.LOCAL:
        host = settings.PORT_TRANSLATION_HOST
        if not host:
            return []
        rows = sorted(instance.port_translations.all(), key=lambda r: r.guest_port)
        return [_link(service=row.service, host=host, port=row.front_port) for row in rows]
    lease = getattr(instance, "lease", None)
    if instance.network != NetworkKind.PUBLIC or lease is None:
        return []
    ports = sorted(
        {
            rule.port
            for rule in instance.firewall_rules.all()
            if rule.protocol == FirewallProtocol.TCP and rule.port in SERVICES
        }
    )
    return [
        _link(service=SERVICES[port], host=lease.ip, port=port, default_port=_DEFAULT_PORTS.get(SERVICES[port]))
        for port in ports
    ]


# The front end's rules -------------------------------------------------------------------------------------------


def wanted_dnat() -> list[packetfilter.Dnat]:
    """The translations of every live VM, as DNAT rules to its lease's address."""
    rows = (
        PortTranslation.objects.filter(instance__state__in=LIVE_STATES)
        .select_related("instance")
        .order_by("front_address", "front_port")
    )
    leases = dict(Lease.objects.filter(instance__in=[row.instance_id for row in rows]).values_list("instance_id", "ip"))
    return [
        packetfilter.Dnat(
            front_address=row.front_address,
            front_port=row.front_port,
            to_address=leases[row.instance_id],
            to_port=row.guest_port,
            comment=f"alto-{row.instance.uuid}",
        )
        for row in rows
        if row.instance_id in leases
    ]


def wanted_firewalls() -> list[packetfilter.Guarded]:
    """The firewall of every live VM, keyed on its lease's address: new connections only as its rules allow (a VM
    without rules lets nothing new in)."""
    leases = dict(Lease.objects.filter(instance__state__in=LIVE_STATES).values_list("instance_id", "ip"))
    by_instance: dict[int, list[packetfilter.Allow]] = {pk: [] for pk in leases}
    for rule in FirewallRule.objects.filter(instance_id__in=list(leases)).order_by("pk"):
        by_instance[rule.instance_id].append(
            packetfilter.Allow(
                address=leases[rule.instance_id], protocol=rule.protocol, port=rule.port, source=rule.source
            )
        )
    return [packetfilter.Guarded(address=leases[pk], allow=tuple(allow)) for pk, allow in by_instance.items()]


@dataclass
class SyncReport:
    """What one :func:`frontend_sync` found missing or extra in the front end's translations, and applied."""

    applied: int = 0
    restored: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def frontend_sync() -> SyncReport:
    """On the front end: make the table ``ip altostratus`` hold exactly the live VMs' translations and firewalls.
    Returns what was missing (restored) or extra (removed) among the translations. No transaction is held while
    nft runs."""
    dnat = wanted_dnat()
    guarded = wanted_firewalls()
    present = {(r.front_address, r.front_port, r.to_address, r.to_port) for r in packetfilter.dnat_rules()}
    wanted = {(r.front_address, r.front_port, r.to_address, r.to_port) for r in dnat}
    packetfilter.ruleset_apply(dnat=dnat, guarded=guarded)
    report = SyncReport(
        applied=len(dnat),
        restored=[f"{a}:{p} -> {t}:{q}" for a, p, t, q in sorted(wanted - present)],
        removed=[f"{a}:{p} -> {t}:{q}" for a, p, t, q in sorted(present - wanted)],
    )
    if report.restored or report.removed:
        logger.info("front end rules: restored %s, removed %s", report.restored, report.removed)
    return report


def enqueue_frontend_sync() -> None:
    """Ask the front end's worker to apply the rules (call after commit). Nothing when the site runs no front-end
    worker (``FRONTEND_QUEUE`` empty, as ``make run`` does): a message nobody consumes would pile up."""
    if settings.FRONTEND_QUEUE:
        current_app.send_task(FRONTEND_SYNC, queue=settings.FRONTEND_QUEUE)


def frontend_sync_on_commit() -> None:
    transaction.on_commit(enqueue_frontend_sync)
