"""Bulk import of signed entries (``manage.py import_entries``): every document goes through the same verification
as an upload (``entry_verify``, then ``entry_store``); entries the Marketplace already holds are skipped before gpg
runs, so that running an import again is harmless; a refused document is counted by its rule and never stops the
rest.

Verification (parsing, gpg) runs in ``jobs`` worker threads while the calling thread stores verified entries in
the order the source gave them, so that gpg's processes and the database work overlap; the order keeps each
timeline oldest first (a directory or an archive is sorted by endorsement time first).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from django.db import connection

from core.errors import ApplicationError
from marketplace import metadata
from marketplace.models import Entry
from marketplace.services.entries import VerifiedEntry, entry_store, entry_verify
from marketplace.sources import Document

ACCEPTED = "accepted"
KNOWN = "known"


@dataclass
class ImportSummary:
    """What an import did: accepted and already-known entries, and the refused ones by rule (with a first
    example message for each rule)."""

    accepted: int = 0
    known: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    @property
    def seen(self) -> int:
        return self.accepted + self.known + sum(self.refused.values())

    def refuse(self, rule: str, message: str) -> None:
        self.refused[rule] += 1
        self.examples.setdefault(rule, message)


@dataclass(frozen=True)
class _Checked:
    """A document after the worker's part: verified, already known, or refused (rule, message)."""

    name: str
    verified: VerifiedEntry | None = None
    known: bool = False
    problem: tuple[str, str] | None = None


def entry_key(md: metadata.Metadata) -> tuple[str, str, dt.datetime]:
    return md.identifier, md.endorsement.email.lower(), md.endorsement.created


def _known(md: metadata.Metadata, raw: bytes) -> bool:
    """Whether the Marketplace holds this very document (same key, same bytes). Another document under a known
    key (a tampered copy, say) is not skipped: it goes through verification and is refused with its reason."""
    identifier, email, created = entry_key(md)
    stored = (
        Entry.objects.filter(image__identifier=identifier, endorser__email=email, created=created)
        .values_list("raw", flat=True)
        .first()
    )
    return stored is not None and bytes(stored) == raw


def _check(document: Document) -> _Checked:
    """Parse, skip when known, verify: the part of an import that runs in worker threads (no transaction)."""
    if document.problem is not None:
        return _Checked(document.name, problem=document.problem)
    try:
        md = metadata.parse(document.raw)
        if _known(md, document.raw):
            return _Checked(document.name, known=True)
        return _Checked(document.name, verified=entry_verify(raw=document.raw))
    except ApplicationError as exc:
        return _Checked(document.name, problem=(exc.code or "invalid", f"{document.name}: {exc.message}"))


def in_timeline_order(documents: Iterable[Document]) -> list[Document]:
    """Documents sorted by endorsement time (then name), so that each timeline is imported oldest first; the
    unreadable ones keep their place at the front, to be refused with their reason."""

    def when(document: Document) -> tuple[int, dt.datetime, str]:
        if document.problem is None:
            try:
                return 1, metadata.parse(document.raw).endorsement.created, document.name
            except ApplicationError:
                pass
        return 0, dt.datetime.min.replace(tzinfo=dt.UTC), document.name

    return sorted(documents, key=when)


def entries_import(
    documents: Iterable[Document],
    *,
    source: str,
    jobs: int = 2,
    on_each: Callable[[str, str], None] | None = None,
) -> ImportSummary:
    """Import every document (in the order given) as an upload would. ``on_each(name, outcome)`` is called after
    each one (``accepted``, ``known`` or the refusing rule): the command's progress bar. Transient faults (gpg or
    the database unavailable) end the import; running it again picks up where it stopped."""
    summary = ImportSummary()
    details = {"source": source}
    for checked in _checked_in_order(documents, jobs=jobs):
        outcome = KNOWN if checked.known else ACCEPTED
        if checked.problem is not None:
            outcome = checked.problem[0]
            summary.refuse(*checked.problem)
        elif checked.verified is not None:
            try:
                entry_store(
                    checked.verified, uploader=None, audit_action="marketplace.entry.imported", audit_details=details
                )
            except ApplicationError as exc:  # not newer than the endorser's latest, facts that disagree…
                if exc.code == "not-newer" and _known(checked.verified.md, checked.verified.raw):
                    outcome = KNOWN  # the same entry twice in one source, both verified before either was stored
                    summary.known += 1
                else:
                    outcome = exc.code or "invalid"
                    summary.refuse(outcome, f"{checked.name}: {exc.message}")
            else:
                summary.accepted += 1
        else:
            summary.known += 1
        if on_each is not None:
            on_each(checked.name, outcome)
    return summary


def _checked_in_order(documents: Iterable[Document], *, jobs: int) -> Iterator[_Checked]:
    """``_check`` of every document, by ``jobs`` threads at most ``4 * jobs`` ahead, yielded in the given order."""
    if jobs <= 1:
        yield from map(_check, documents)
        return
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="alto-import") as pool:
        try:
            pending: list[Future[_Checked]] = []
            for document in documents:
                pending.append(pool.submit(_check, document))
                if len(pending) >= 4 * jobs:
                    yield pending.pop(0).result()
            for future in pending:
                yield future.result()
        finally:
            # Each worker thread opened its own database connection: one closing task per thread (the barrier
            # keeps any thread from taking two).
            barrier = threading.Barrier(jobs)
            for closing in [pool.submit(_close_connection, barrier) for _ in range(jobs)]:
                closing.result()


def _close_connection(barrier: threading.Barrier) -> None:
    barrier.wait(timeout=60)
    connection.close()
