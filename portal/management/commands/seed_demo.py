"""Demo data for ``make run``: three accounts, the instance types, simulated libvirt hosts (the test driver's
default host and three of different sizes described by ``<node>`` files in ``var/demo-hosts/``), the three
networks, the site key, a few signed Marketplace entries (``portal/demo.py``), and the file backend of volumes in
``STORAGE_FILE_DIR`` (``var/volumes``) with a first volume for the researcher (the worker makes it).

Idempotent: running it again changes nothing that exists and prints the same logins.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts import services as accounts_services
from compute import services as compute_services
from compute.models import Host, Network
from compute.networks import network_create
from core import audit
from marketplace import services as marketplace_services
from portal.demo import marketplace_demo_seed
from storage import services as storage_services
from storage.models import Volume

# Simulated hosts: name → (vCPUs, RAM MiB), served by libvirt's test driver from a <node> file.
DEMO_HOSTS = {"demo-large": (32, 65536), "demo-medium": (16, 32768), "demo-small": (8, 16384)}
# The three address classes. Private ranges from RFC 1918; the public one is TEST-NET-3 (RFC 5737), which
# is never routed, so the demo touches no real address.
DEMO_NETWORKS = [
    # name, kind, CIDR, gateway, bridge
    ("private", "private", "10.42.0.0/24", "10.42.0.1", "br-private"),
    ("local", "local", "172.20.0.0/24", "172.20.0.1", "br-local"),
    ("public", "public", "203.0.113.0/24", "203.0.113.1", "br-public"),
]

NODE_XML = """<node>
  <cpu>
    <mhz>2400</mhz>
    <model>x86_64</model>
    <nodes>1</nodes>
    <sockets>1</sockets>
    <cores>{vcpus}</cores>
    <threads>1</threads>
    <active>{vcpus}</active>
  </cpu>
  <memory>{ram_kib}</memory>
</node>
"""


def demo_host_uri(name: str, vcpus: int, ram_mib: int) -> str:
    """Write (or keep) the test driver's description of host ``name`` and return its libvirt URI."""
    directory = settings.VAR_DIR / "demo-hosts"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.xml"
    text = NODE_XML.format(vcpus=vcpus, ram_kib=ram_mib * 1024)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return f"test://{path.resolve()}"


DEMO_ACCOUNTS = [
    # username, password, staff, given name, family name
    ("admin", "admin-demo-pass", True, "Ada", "Admin"),
    ("researcher", "researcher-demo-pass", False, "Rosalind", "Researcher"),
    ("creator", "creator-demo-pass", False, "Chris", "Creator"),
]


class Command(BaseCommand):
    help = "Load demo accounts, instance types, hosts, networks, the site key and Marketplace entries (safe to rerun)."

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        with transaction.atomic():
            for username, password, staff, first, last in DEMO_ACCOUNTS:
                user, created = user_model.objects.get_or_create(
                    username=username,
                    defaults={
                        "email": f"{username}@example.org",
                        "first_name": first,
                        "last_name": last,
                        "is_staff": staff,
                        "is_superuser": staff,
                    },
                )
                if created:
                    user.set_password(password)
                    user.save(update_fields=["password"])
                    audit.record(None, "portal.demo.account_created", user, staff=staff)
                accounts_services.project_personal_ensure(user=user, actor=None)
        compute_services.instance_types_seed(actor=None)
        uri = settings.LIBVIRT_DEFAULT_URI
        if not Host.objects.filter(uri=uri).exists():
            compute_services.host_register(actor=None, name="demo-host", uri=uri)
        for name, (vcpus, ram_mib) in DEMO_HOSTS.items():
            uri = demo_host_uri(name, vcpus, ram_mib)
            if not Host.objects.filter(name=name).exists():
                compute_services.host_register(actor=None, name=name, uri=uri)
        admin = user_model.objects.get(username="admin")
        for name, kind, cidr, gateway, bridge in DEMO_NETWORKS:
            if not Network.objects.filter(kind=kind).exists():
                network_create(
                    actor=admin, name=name, kind=kind, cidr=cidr, gateway=gateway, dns=[gateway], bridge=bridge
                )
        site_key, _ = marketplace_services.site_key_ensure(actor=None)
        marketplace_demo_seed(
            creator=user_model.objects.get(username="creator"), staff=user_model.objects.get(username="admin")
        )
        self._storage(user_model.objects.get(username="researcher"))

        self.stdout.write(
            self.style.SUCCESS("Demo data is loaded. Log in at http://127.0.0.1:8000/accounts/login/ as:")
        )
        for username, password, staff, _first, _last in DEMO_ACCOUNTS:
            role = "site administrator" if staff else ("image creator" if username == "creator" else "researcher")
            self.stdout.write(f"  {role:<20} username {username:<12} password {password}")
        self.stdout.write(f"The site key (manage.py create_site_key shows it): {site_key.fingerprint}")
        self.stdout.write(
            f"Volumes: the {settings.STORAGE_DEFAULT_BACKEND} backend, files in {settings.STORAGE_FILE_DIR} "
            "(researcher's first volume: demo-scratch)."
        )

    def _storage(self, researcher: Any) -> None:
        """The file backend's directory, and one volume for the researcher the first time (made by the worker)."""
        settings.STORAGE_FILE_DIR.mkdir(parents=True, exist_ok=True)
        if not Volume.objects.filter(created_by=researcher).exists():
            storage_services.volume_create(
                actor=researcher,
                project=accounts_services.project_personal_ensure(user=researcher, actor=None),
                name="demo-scratch",
                size_gib=10,
                backend="file",
            )
