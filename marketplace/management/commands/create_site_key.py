"""``manage.py create_site_key``: make the site's OpenPGP key once, then show it (safe to run again)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from marketplace import services


class Command(BaseCommand):
    help = (
        "Create the site's OpenPGP key in MARKETPLACE_SITE_GNUPG_HOME (passphrase from "
        "MARKETPLACE_SITE_KEY_PASSPHRASE_FILE, made if missing), trust it, and print its fingerprint and "
        "armored public key. Idempotent."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            key, created = services.site_key_ensure(actor=None)
        except ApplicationError as exc:
            raise CommandError(f"{exc.message} ({exc.code})") from None
        if created:
            self.stdout.write(self.style.SUCCESS(f"Created the site key {key.fingerprint} ({key.uid})."))
        else:
            self.stdout.write(f"The site key exists: {key.fingerprint} ({key.uid}).")
        self.stdout.write(f"Keyring: {settings.MARKETPLACE_SITE_GNUPG_HOME}")
        self.stdout.write(f"Passphrase file: {settings.MARKETPLACE_SITE_KEY_PASSPHRASE_FILE}")
        self.stdout.write(f"Fingerprint: {key.fingerprint}")
        self.stdout.write("Public key, for other sites to trust:")
        self.stdout.write(key.armored.strip())
