"""``manage.py import_entries PATH|URL``: bulk import and replication of signed entries.

PATH is a directory of ``*.xml`` documents or a tar archive of them (plain, gz, bz2, xz); URL is another
Altostratus Marketplace, read through its entries API page by page (``?format=xml``). Every entry goes through an
upload's verification; known entries are skipped (running it again is harmless); refused ones are counted by
rule and never stop the rest.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from core.errors import TransientError
from marketplace import sources
from marketplace.services.imports import ImportSummary, entries_import, in_timeline_order


class RateColumn(ProgressColumn):
    """Entries per second, over the whole run so far."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.1f} entries/s", style="progress.data.speed")


class Command(BaseCommand):
    help = (
        "Import signed Marketplace entries from a directory or tar archive of *.xml documents, or from another "
        "Altostratus Marketplace's URL (its entries API, ?format=xml pages). Each entry is verified as an upload "
        "is; known entries are skipped; refused ones are counted by rule."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", help="a directory, a tar archive, or http(s)://another-marketplace/")
        parser.add_argument(
            "--jobs", type=int, default=os.cpu_count() or 1, help="verifying threads (gpg runs in each; default: CPUs)"
        )
        parser.add_argument("--page-size", type=int, default=100, help="entries per page asked of a server")
        parser.add_argument(
            "--max-page-bytes", type=int, default=sources.Limits.page_bytes, help="largest page accepted (bytes)"
        )
        parser.add_argument("--timeout", type=float, default=sources.Limits.io_timeout, help="per read (seconds)")

    def handle(self, *args: Any, **options: Any) -> None:
        source: str = options["source"]
        jobs = max(1, options["jobs"])
        total: int | None = None
        if sources.is_url(source):
            limits = sources.Limits(page_bytes=options["max_page_bytes"], io_timeout=options["timeout"])
            documents: Any = sources.api_documents(source, limits=limits, page_size=max(1, options["page_size"]))
        else:
            path = Path(source)
            if path.is_dir():
                listed = sources.directory_documents(path)
            elif path.is_file():
                listed = sources.tar_documents(path)
            else:
                raise CommandError(f"{source} is neither a directory, a tar archive nor an http(s) URL.")
            try:
                documents = in_timeline_order(listed)
            except sources.SourceError as exc:
                raise CommandError(exc.message) from None
            total = len(documents)

        console = Console(file=self.stdout, highlight=False)
        summary = ImportSummary()
        started = time.monotonic()
        with Progress(
            TextColumn("[bold]Importing[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TextColumn("{task.fields[accepted]} accepted, {task.fields[known]} known, {task.fields[refused]} refused"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("import", total=total, accepted=0, known=0, refused=0)
            counts = {"accepted": 0, "known": 0, "refused": 0}

            def advance(name: str, outcome: str) -> None:
                key = outcome if outcome in ("accepted", "known") else "refused"
                counts[key] += 1
                progress.update(task, advance=1, **counts)

            try:
                summary = entries_import(documents, source=source, jobs=jobs, on_each=advance)
            except sources.SourceError as exc:
                raise CommandError(f"{exc.message} ({counts} so far; run the import again to go on).") from None
            except TransientError as exc:
                raise CommandError(f"{exc} ({counts} so far; run the import again to go on).") from None
        elapsed = time.monotonic() - started
        rate = summary.seen / elapsed if elapsed > 0 else 0.0
        refused = sum(summary.refused.values())
        self.stdout.write(
            f"Imported from {source} in {elapsed:.1f} s ({rate:.1f} entries/s): {summary.accepted} accepted, "
            f"{summary.known} already known, {refused} refused."
        )
        for rule, count in sorted(summary.refused.items()):
            self.stdout.write(f"  refused {rule}: {count} (first: {summary.examples[rule]})")
