"""``manage.py subscribe_imagelist URL|FILE``: follow a HEPiX image list (S/MIME-signed ``hv:imagelist``).

The list's signature is verified against ``MARKETPLACE_X509_CA_DIR``, its endorser bound to the signing
certificate, and each image becomes a Marketplace image endorsed by the list's endorser until the list expires.
``--refresh [URL|FILE]`` reads the subscribed lists again (as the periodic task does), ``--list`` shows them,
``--unsubscribe URL|FILE`` stops following one (its entries stay and expire with the list).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.errors import ApplicationError, TransientError
from marketplace.models import ImageListSubscription
from marketplace.services import imagelists


class Command(BaseCommand):
    help = (
        "Subscribe to a HEPiX image list (an http(s) URL or a file): verify its S/MIME signature against the trusted "
        "CAs and add its images to the Marketplace, endorsed by the list's endorser. --refresh reads subscribed "
        "lists again (new versions update and deprecate images), --list shows them, --unsubscribe stops one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", nargs="?", help="the image list's URL or file")
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--refresh", action="store_true", help="read the list again (every list without SOURCE)")
        action.add_argument("--list", action="store_true", help="show the subscriptions and how they last went")
        action.add_argument("--unsubscribe", action="store_true", help="stop following the list SOURCE")

    def handle(self, *args: Any, **options: Any) -> None:
        source: str | None = options["source"]
        try:
            if options["list"]:
                self._show()
            elif options["refresh"]:
                outcomes = (
                    [imagelists.imagelist_refresh(subscription_id=self._subscription(source).pk)]
                    if source
                    else imagelists.imagelists_refresh()
                )
                for outcome in outcomes:
                    self._report(outcome)
                if any(outcome.change == "refused" for outcome in outcomes):
                    raise CommandError("Some image lists were refused; their images are unchanged.")
            elif options["unsubscribe"]:
                if not source:
                    raise CommandError("Name the list to unsubscribe from.")
                imagelists.imagelist_unsubscribe(source=source)
                self.stdout.write(f"Unsubscribed from {source}; its images stay until the list's expiry.")
            else:
                if not source:
                    raise CommandError("Name an image list: an http(s) URL or a file.")
                self._report(imagelists.imagelist_subscribe(source=source))
        except (ApplicationError, TransientError) as exc:
            code = getattr(exc, "code", None) or "unavailable"
            raise CommandError(f"Refused ({code}): {exc}") from None

    def _subscription(self, source: str) -> ImageListSubscription:
        normalised = imagelists.source_normalise(source)
        subscription = ImageListSubscription.objects.filter(source=normalised).first()
        if subscription is None:
            raise CommandError(f"No subscription to {source}.")
        return subscription

    def _report(self, outcome: imagelists.Refresh) -> None:
        subscription = outcome.subscription
        if outcome.change == "refused":
            self.stderr.write(f"{subscription.source}: refused ({outcome.code}): {outcome.message}")
            return
        if outcome.change == "unchanged":
            self.stdout.write(f"{subscription.source}: unchanged (version {subscription.version}).")
            return
        self.stdout.write(
            f"{subscription.source}: list {subscription.list_identifier} version {subscription.version} "
            f"({outcome.change}), endorsed by {subscription.endorser.email if subscription.endorser else '-'}, "
            f"expires {subscription.expires:%Y-%m-%dT%H:%M:%SZ}: {len(outcome.added)} added, "
            f"{len(outcome.kept)} kept, {len(outcome.deprecated)} deprecated."
        )
        for label, uuids in (("added", outcome.added), ("deprecated", outcome.deprecated)):
            for uuid in uuids:
                self.stdout.write(f"  {label}: {uuid}")

    def _show(self) -> None:
        subscriptions = ImageListSubscription.objects.select_related("endorser").order_by("source")
        if not subscriptions:
            self.stdout.write("No image list subscriptions.")
        for s in subscriptions:
            expires = f"{s.expires:%Y-%m-%dT%H:%M:%SZ}" if s.expires else "-"
            error = f" ({s.error_code}: {s.error_message})" if s.state == s.State.ERROR else ""
            self.stdout.write(
                f"{s.source}  list={s.list_identifier or '-'} version={s.version or '-'} expires={expires} "
                f"endorser={s.endorser.email if s.endorser else '-'} state={s.state}{error}"
            )
