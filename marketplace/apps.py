from __future__ import annotations

from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    verbose_name = "Marketplace"

    def ready(self) -> None:
        from accounts.emails import register_email_claim
        from marketplace import checks  # noqa: F401 - registers the database checks
        from marketplace.selectors import email_claim

        # The site's e-mail and endorser e-mails are taken: accounts asks before giving an address to anyone.
        register_email_claim(email_claim)
