"""``manage.py import_policy FILE [--dry-run]``: read a StratusLab ``policy.cfg`` into the site policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.errors import ApplicationError
from marketplace import policy, selectors
from marketplace.policy.services import policy_change, policy_rules_from_cfg


class Command(BaseCommand):
    help = (
        "Import a StratusLab policy.cfg ([endorsers], [images], [checksums] with whitelist<section>/blacklist<section> "
        "keys): "
        "its lists replace the active policy's, every other rule is kept. Prints the dry run (images newly "
        "denied or allowed), then applies it unless --dry-run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="the policy.cfg file")
        parser.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
        parser.add_argument("--note", default="", help="a note kept with the new policy version")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from None
        active = selectors.policy_active()
        try:
            rules = policy_rules_from_cfg(text=text)
        except ApplicationError as exc:
            raise CommandError(f"{path}: {exc.message}") from None
        result = policy.dry_run(rules)
        self.stdout.write(
            f"Dry run over {result.evaluated} images: {result.denied_before} denied now, "
            f"{result.denied_after} denied with {path.name}."
        )
        for title, changes in (("Newly denied", result.newly_denied), ("Newly allowed", result.newly_allowed)):
            self.stdout.write(f"{title}: {len(changes)}")
            for change in changes:
                self.stdout.write(f"  {change.identifier}  {change.title}: {change.reason}")
        if options["dry_run"]:
            self.stdout.write("Dry run only: the policy is unchanged.")
            return
        try:
            new, changed = policy_change(
                actor=None,
                rules=rules,
                note=options["note"] or f"imported from {path.name}",
                based_on=active.pk if active else 0,
                source="policy.cfg",
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        if changed:
            self.stdout.write(self.style.SUCCESS(f"Policy #{new.pk} is now active."))
        else:
            self.stdout.write("The policy already says this: nothing changed.")
