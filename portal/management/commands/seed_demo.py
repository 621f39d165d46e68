"""Demo data for ``make run``: three accounts, the instance types, one simulated libvirt host, the site key
and a few signed Marketplace entries (``portal/demo.py``).

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
from compute.models import Host
from core import audit
from marketplace import services as marketplace_services
from portal.demo import marketplace_demo_seed

DEMO_ACCOUNTS = [
    # username, password, staff, given name, family name
    ("admin", "admin-demo-pass", True, "Ada", "Admin"),
    ("researcher", "researcher-demo-pass", False, "Rosalind", "Researcher"),
    ("creator", "creator-demo-pass", False, "Chris", "Creator"),
]


class Command(BaseCommand):
    help = "Load demo accounts, instance types, a host, the site key and Marketplace entries (safe to rerun)."

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
        site_key, _ = marketplace_services.site_key_ensure(actor=None)
        marketplace_demo_seed(
            creator=user_model.objects.get(username="creator"), staff=user_model.objects.get(username="admin")
        )

        self.stdout.write(
            self.style.SUCCESS("Demo data is loaded. Log in at http://127.0.0.1:8000/accounts/login/ as:")
        )
        for username, password, staff, _first, _last in DEMO_ACCOUNTS:
            role = "site administrator" if staff else ("image creator" if username == "creator" else "researcher")
            self.stdout.write(f"  {role:<20} username {username:<12} password {password}")
        self.stdout.write(f"The site key (manage.py create_site_key shows it): {site_key.fingerprint}")
