"""The one adapter to nftables: our rules live in the table ``ip altostratus`` and nowhere else, so the site's
own rules (and libvirt's) are never touched.

It drives the ``nft`` command with JSON (``nft -j -f -``; the python bindings are a Debian package, not on PyPI),
run as ``settings.NFT_COMMAND`` (default ``nft``; a site whose front end is another machine may say
``ssh root@front nft``, the tests say ``ip netns exec <ns> nft``). The whole table is replaced in one nft
transaction by :func:`ruleset_apply` from what the database says, so applying is idempotent, a half-applied state
is never seen, and a front end that rebooted (an empty table) is repaired by applying again.

Chains: ``prerouting`` and ``output`` (nat, ``dstnat``): a front-end port translated to a VM's port, for
connections that arrive and for those made on the front end itself; ``forward`` (filter): a VM's firewall, new
connections to its address accepted only as its rules say (the rest dropped), answers always let through.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from core.errors import PermanentError

FAMILY = "ip"
TABLE = "altostratus"
PROTOCOLS = ("tcp", "udp")
TIMEOUT = 30


class PacketFilterError(PermanentError):
    """nft refused the rules or could not be run; the message says what it answered."""


@dataclass(frozen=True, order=True)
class Dnat:
    """Connections to ``front_address:front_port`` go to ``to_address:to_port`` (``protocol``)."""

    front_address: str
    front_port: int
    to_address: str
    to_port: int
    protocol: str = "tcp"
    comment: str = ""


@dataclass(frozen=True, order=True)
class Allow:
    """New connections to ``address`` allowed: ``protocol`` (tcp, udp, icmp) to ``port`` (none for icmp: its
    ``icmp_type``, or every type when None) from ``source`` (a CIDR)."""

    address: str
    protocol: str
    port: int | None = None
    source: str = "0.0.0.0/0"
    icmp_type: int | None = None


@dataclass(frozen=True)
class Guarded:
    """A VM's firewall: new connections to ``address`` are dropped unless one of ``allow`` lets them in."""

    address: str
    allow: tuple[Allow, ...] = ()


def _command() -> list[str]:
    return shlex.split(settings.NFT_COMMAND)


def _run(args: Sequence[str], *, stdin: str | None = None) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - our own command line, no shell
            [*_command(), *args], input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PacketFilterError(f"could not run {settings.NFT_COMMAND}: {exc}") from None
    if done.returncode:
        raise PacketFilterError(f"{settings.NFT_COMMAND} {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def _match(protocol: str, field: str, right: Any) -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"payload": {"protocol": protocol, "field": field}}, "right": right}}


def _prefix(cidr: str) -> Any:
    network = ipaddress.ip_network(cidr, strict=False)
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


def _rule(chain: str, expr: list[dict[str, Any]], comment: str = "") -> dict[str, Any]:
    rule: dict[str, Any] = {"family": FAMILY, "table": TABLE, "chain": chain, "expr": expr}
    if comment:
        rule["comment"] = comment[:128]
    return {"add": {"rule": rule}}


def _chain(name: str, *, kind: str, hook: str, priority: int, policy: str = "accept") -> dict[str, Any]:
    return {
        "add": {
            "chain": {
                "family": FAMILY,
                "table": TABLE,
                "name": name,
                "type": kind,
                "hook": hook,
                "prio": priority,
                "policy": policy,
            }
        }
    }


def _dnat_expr(rule: Dnat) -> list[dict[str, Any]]:
    if rule.protocol not in PROTOCOLS:
        raise PacketFilterError(f"cannot translate protocol {rule.protocol!r}")
    return [
        _match("ip", "daddr", str(ipaddress.IPv4Address(rule.front_address))),
        _match(rule.protocol, "dport", int(rule.front_port)),
        {"dnat": {"addr": str(ipaddress.IPv4Address(rule.to_address)), "port": int(rule.to_port)}},
    ]


def _allow_expr(rule: Allow) -> list[dict[str, Any]]:
    expr = [_match("ip", "daddr", str(ipaddress.IPv4Address(rule.address)))]
    if rule.source not in ("0.0.0.0/0", ""):
        expr.append(_match("ip", "saddr", _prefix(rule.source)))
    if rule.protocol == "icmp":
        expr.append(_match("ip", "protocol", "icmp"))
        if rule.icmp_type is not None:
            expr.append(_match("icmp", "type", int(rule.icmp_type)))
    elif rule.protocol in PROTOCOLS:
        expr.append(_match("ip", "protocol", rule.protocol))
        if rule.port is not None:
            expr.append(_match(rule.protocol, "dport", int(rule.port)))
    else:
        raise PacketFilterError(f"cannot filter protocol {rule.protocol!r}")
    return [*expr, {"accept": None}]


def ruleset(*, dnat: Sequence[Dnat], guarded: Sequence[Guarded]) -> dict[str, Any]:
    """The nft JSON batch that replaces our table with exactly these translations and firewalls."""
    table = {"family": FAMILY, "name": TABLE}
    # Adding first makes the delete succeed on a front end that has no table yet (a fresh boot).
    commands: list[dict[str, Any]] = [
        {"add": {"table": table}},
        {"delete": {"table": table}},
        {"add": {"table": table}},
    ]
    commands.append(_chain("prerouting", kind="nat", hook="prerouting", priority=-100))
    commands.append(_chain("output", kind="nat", hook="output", priority=-100))
    commands.append(_chain("forward", kind="filter", hook="forward", priority=0))
    for rule in sorted(dnat):
        for chain in ("prerouting", "output"):
            commands.append(_rule(chain, _dnat_expr(rule), rule.comment))
    if guarded:
        # Answers to connections a VM made, or that its rules let in, always pass.
        commands.append(
            _rule(
                "forward",
                [
                    {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
                    {"accept": None},
                ],
            )
        )
    for vm in sorted(guarded, key=lambda g: ipaddress.IPv4Address(g.address)):
        for allow in sorted(vm.allow):
            commands.append(_rule("forward", _allow_expr(allow)))
        commands.append(
            _rule("forward", [_match("ip", "daddr", str(ipaddress.IPv4Address(vm.address))), {"drop": None}])
        )
    return {"nftables": commands}


def ruleset_apply(*, dnat: Sequence[Dnat], guarded: Sequence[Guarded] = ()) -> None:
    """Replace the table ``ip altostratus`` with exactly these rules, atomically (one nft transaction)."""
    _run(["-j", "-f", "-"], stdin=json.dumps(ruleset(dnat=dnat, guarded=guarded)))


def _rules() -> list[dict[str, Any]]:
    try:
        listing = json.loads(_run(["-j", "list", "table", FAMILY, TABLE]))
    except PacketFilterError as exc:
        if "No such file or directory" in str(exc):
            return []  # no table: nothing applied yet (or the front end rebooted)
        raise
    return [item["rule"] for item in listing.get("nftables", []) if "rule" in item]


def dnat_rules() -> list[Dnat]:
    """The translations our table holds now (its ``prerouting`` chain), sorted."""
    found = []
    for rule in _rules():
        if rule.get("chain") != "prerouting":
            continue
        front = port = protocol = target = None
        for expr in rule.get("expr", []):
            if "match" in expr:
                left = expr["match"]["left"].get("payload", {})
                if left.get("field") == "daddr":
                    front = expr["match"]["right"]
                elif left.get("field") == "dport":
                    protocol, port = left.get("protocol"), expr["match"]["right"]
            elif "dnat" in expr:
                target = expr["dnat"]
        if front and port and protocol and target:
            found.append(
                Dnat(
                    front_address=front,
                    front_port=int(port),
                    to_address=target["addr"],
                    to_port=int(target["port"]),
                    protocol=protocol,
                    comment=rule.get("comment", ""),
                )
            )
    return sorted(found)


def table_remove() -> None:
    """Delete our table (and so every rule of ours). Idempotent."""
    table = {"family": FAMILY, "name": TABLE}
    _run(["-j", "-f", "-"], stdin=json.dumps({"nftables": [{"add": {"table": table}}, {"delete": {"table": table}}]}))
