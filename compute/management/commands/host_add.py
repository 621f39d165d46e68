"""``manage.py host_add URI [--name N] [--cpu-ratio R] [--ram-ratio R]``: register a real libvirt host.

The capacity is what libvirt reports at ``URI`` (``qemu:///system``, ``qemu+ssh://root@node1/system``,
``qemu+tls://node1/system``); the host's worker then consumes ``host.<name>`` (``-Q default,host.<name>``)."""

from __future__ import annotations

import socket
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError, CommandParser

from compute.services import host_register
from core.errors import ApplicationError


def default_name(uri: str) -> str:
    """The host part of ``uri`` (``node1`` of ``qemu+ssh://root@node1.example.org/system``); for a local URI
    (``qemu:///system``) the short name of this machine."""
    host = urlsplit(uri).hostname or socket.gethostname()
    return host.split(".")[0] if not _is_address(host) else host


def _is_address(host: str) -> bool:
    return host.replace(".", "").isdigit() or ":" in host


class Command(BaseCommand):
    help = "Register a libvirt host by its URI, with the vCPUs and RAM libvirt reports there."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("uri", help="libvirt URI, e.g. qemu:///system or qemu+ssh://root@node1/system")
        parser.add_argument("--name", help="the host's name and worker queue host.<name> (default: from the URI)")
        parser.add_argument("--cpu-ratio", type=Decimal, help="vCPU overcommit ratio (default 4)")
        parser.add_argument("--ram-ratio", type=Decimal, help="RAM overcommit ratio (default 1)")

    def handle(self, *args: Any, **options: Any) -> None:
        uri = options["uri"]
        name = options["name"] or default_name(uri)
        try:
            host = host_register(
                actor=None,
                name=name,
                uri=uri,
                cpu_allocation_ratio=options["cpu_ratio"],
                ram_allocation_ratio=options["ram_ratio"],
            )
        except ApplicationError as exc:
            raise CommandError(f"host {name} ({uri}) not registered: {exc.message} [{exc.code}]") from None
        self.stdout.write(
            f"Registered host {host.name} ({host.uri}): {host.vcpus} vCPUs × {host.cpu_allocation_ratio}, "
            f"{host.ram_mib} MiB RAM × {host.ram_allocation_ratio}. "
            f"Its worker consumes the queue host.{host.name} (celery worker -Q default,host.{host.name})."
        )
