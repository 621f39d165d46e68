"""VM firewalls: the new connections a VM lets in (:class:`~compute.models.FirewallRule`).

A VM starts with its image's rules (``slterms:inbound-port`` as tcp ports open to all, ``slterms:icmp`` as icmp
allowed); its project's members add rules (protocol, port, source CIDR) within the site's ``FIREWALL_USER_PORTS`` and
delete rules. The front end's nftables table drops every other new connection to the VM's address
(:func:`compute.access.frontend_sync`, sent after each change)."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings
from django.db import transaction

from compute import access
from compute.models import FirewallProtocol, FirewallRule, Instance
from core import audit
from core.errors import ApplicationError, Conflict, NotFound
from marketplace.models import Image

MAX_RULES_PER_INSTANCE = 64


def firewall_defaults_create(*, instance: Instance, image: Image) -> list[FirewallRule]:
    """The image's rules for a new ``instance`` (inside the transaction that creates it)."""
    details = access.image_metadata(image)
    rules = [
        FirewallRule(instance=instance, protocol=FirewallProtocol.TCP, port=port, origin=FirewallRule.Origin.IMAGE)
        for port in access.image_inbound_ports(image)
    ]
    if details.get("icmp"):
        rules.append(FirewallRule(instance=instance, protocol=FirewallProtocol.ICMP, origin=FirewallRule.Origin.IMAGE))
    return FirewallRule.objects.bulk_create(rules)


def _port_allowed(port: int) -> bool:
    return any(low <= port <= high for low, high in settings.FIREWALL_USER_PORTS)


def _clean(*, protocol: Any, port: Any, source: Any) -> tuple[str, int | None, str]:
    if protocol not in FirewallProtocol.values:
        raise ApplicationError(
            f"unknown protocol {protocol!r}; choose one of {', '.join(FirewallProtocol.values)}",
            code="firewall-protocol",
        )
    if protocol == FirewallProtocol.ICMP:
        if port not in (None, ""):
            raise ApplicationError("an icmp rule has no port", code="firewall-port")
        port = None
    else:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ApplicationError(f"a {protocol} rule needs a port 1-65535, got {port!r}", code="firewall-port")
        if not _port_allowed(port):
            allowed = ", ".join(
                f"{low}-{high}" if low != high else str(low) for low, high in settings.FIREWALL_USER_PORTS
            )
            raise ApplicationError(
                f"this site lets users open ports {allowed} only; {port} is not among them", code="firewall-port"
            )
    try:
        network = ipaddress.IPv4Network(str(source or "0.0.0.0/0").strip(), strict=True)
    except ValueError as exc:
        raise ApplicationError(
            f"{source!r} is not an IPv4 network in CIDR notation: {exc}", code="firewall-source"
        ) from None
    return protocol, port, str(network)


def firewall_rule_add(*, actor: Any, instance: Instance, protocol: str, port: int | None, source: str) -> FirewallRule:
    """Let new ``protocol`` connections to ``port`` from ``source`` into ``instance`` (the caller has checked the
    actor may act on it). ApplicationError for bad input or a port the site does not let users open; Conflict
    ``firewall-rule-exists`` for a rule it has, ``instance-state`` for an ended VM."""
    protocol, port, source = _clean(protocol=protocol, port=port, source=source)
    with transaction.atomic():
        locked = Instance.objects.select_for_update().get(pk=instance.pk)
        if not locked.is_live:
            raise Conflict(f"instance {locked.name} is terminated", code="instance-state")
        rules = FirewallRule.objects.filter(instance=locked)
        if rules.filter(protocol=protocol, port=port, source=source).exists():
            raise Conflict("the instance has this rule already", code="firewall-rule-exists")
        if rules.count() >= MAX_RULES_PER_INSTANCE:
            raise Conflict(f"an instance has at most {MAX_RULES_PER_INSTANCE} rules", code="firewall-rule-limit")
        rule = FirewallRule.objects.create(
            instance=locked, protocol=protocol, port=port, source=source, origin=FirewallRule.Origin.USER
        )
        audit.record(
            actor, "compute.firewall_rule.added", locked, rule=rule.pk, protocol=protocol, port=port, source=source
        )
        access.frontend_sync_on_commit()
    return rule


def firewall_rule_delete(*, actor: Any, instance: Instance, rule_id: Any) -> None:
    """Delete the rule ``rule_id`` of ``instance`` (an image's rule too: the owner decides). NotFound for a rule
    of another instance or none."""
    try:
        rule_pk = int(rule_id)
    except (TypeError, ValueError):
        raise NotFound("no such firewall rule") from None
    with transaction.atomic():
        rule = FirewallRule.objects.filter(instance=instance, pk=rule_pk).first()
        if rule is None:
            raise NotFound("no such firewall rule")
        audit.record(
            actor,
            "compute.firewall_rule.deleted",
            instance,
            rule=rule.pk,
            protocol=rule.protocol,
            port=rule.port,
            source=rule.source,
            origin=rule.origin,
        )
        rule.delete()
        access.frontend_sync_on_commit()
