from __future__ import annotations

from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    verbose_name = "Marketplace"

    def ready(self) -> None:
        from accounts.emails import register_email_claim
        from marketplace import checks  # noqa: F401 - registers the database checks
        from marketplace.selectors import email_claim, signing_key_facts
        from marketplace.signing import register_key_facts

        # The site's e-mail and endorser e-mails are taken: accounts asks before giving an address to anyone.
        register_email_claim(email_claim)
        # Verifying an entry reads its key's facts from the database, not from a second and third gpg process.
        register_key_facts(signing_key_facts)
