"""Bulk import of signed entries (``manage.py import_entries``): every document goes through the same verification
as an upload (``entry_verify``) and the same store (``entries_store``, which checks, refuses and keeps the books as
``entry_store`` does, many entries per transaction); entries the Marketplace already holds are skipped before gpg
runs, so that running an import again is harmless; a refused document is counted by its rule and never stops the
rest.

The documents go in chunks: the calling thread parses a chunk, asks the database once which of them it holds and
once for the keys their issuers name, and hands their gpg verification to ``jobs`` worker threads; while those
verify it, the calling thread stores the chunk before (each image's entries in the order the source gave them, so
that each timeline goes oldest first: a directory or an archive is sorted by endorsement time first). gpg runs with
no transaction open and no lock held.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from django.db import connection

from core.errors import ApplicationError
from marketplace import metadata
from marketplace.models import Entry
from marketplace.services.entries import (
    KeyBook,
    VerifiedEntry,
    entries_store,
    entry_verify,
    issuer_fingerprint,
    key_book,
)
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


CHUNK = 100  # documents parsed, looked up and stored together


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
    return _held([md]).get(entry_key(md)) == raw


def _held(parsed: list[metadata.Metadata]) -> dict[tuple[str, str, dt.datetime], bytes]:
    """The signed bytes the Marketplace holds under these documents' keys, in one query: a document is known when
    its bytes are these (another document under the same key is not)."""
    if not parsed:
        return {}
    wanted = {entry_key(md) for md in parsed}
    rows = Entry.objects.filter(
        image__identifier__in={k[0] for k in wanted},
        endorser__email__in={k[1] for k in wanted},
        created__in={k[2] for k in wanted},
    ).values_list("image__identifier", "endorser__email", "created", "raw")
    return {
        (identifier, email, created): bytes(raw)
        for identifier, email, created, raw in rows
        if (identifier, email, created) in wanted
    }


def _refused(name: str, exc: ApplicationError) -> _Checked:
    return _Checked(name, problem=(exc.code or "invalid", f"{name}: {exc.message}"))


def _parsed(document: Document) -> _Checked | metadata.Metadata:
    if document.problem is not None:
        return _Checked(document.name, problem=document.problem)
    try:
        return metadata.parse(document.raw)
    except ApplicationError as exc:
        return _refused(document.name, exc)


def _verify(document: Document, md: metadata.Metadata, book: KeyBook) -> _Checked:
    """gpg and the key checks of one document: the part of an import that runs in worker threads."""
    try:
        return _Checked(document.name, verified=entry_verify(raw=document.raw, md=md, book=book))
    except ApplicationError as exc:
        return _refused(document.name, exc)


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
    for chunk in _checked_chunks(documents, jobs=jobs):
        verified = [checked.verified for checked in chunk if checked.verified is not None]
        stored = iter(
            entries_store(verified, uploader=None, audit_action="marketplace.entry.imported", audit_details=details)
        )
        for checked in chunk:
            outcome = KNOWN if checked.known else ACCEPTED
            if checked.problem is not None:
                outcome = checked.problem[0]
                summary.refuse(*checked.problem)
            elif checked.verified is not None:
                result = next(stored)
                if not isinstance(result, ApplicationError):
                    summary.accepted += 1
                elif result.code == "not-newer" and _known(checked.verified.md, checked.verified.raw):
                    outcome = KNOWN  # the same entry twice in one source, both verified before either was stored
                    summary.known += 1
                else:  # not newer than the endorser's latest, facts that disagree…
                    outcome = result.code or "invalid"
                    summary.refuse(outcome, f"{checked.name}: {result.message}")
            else:
                summary.known += 1
            if on_each is not None:
                on_each(checked.name, outcome)
    return summary


def _chunk_submitted(
    chunk: list[Document], submit: Callable[..., Future[_Checked]]
) -> list[Future[_Checked] | _Checked]:
    """Parse a chunk, skip what is known or unreadable (one query), read the issuers' keys (two), and hand the
    rest to ``submit`` (gpg)."""
    parsed = [(document, _parsed(document)) for document in chunk]
    readable = [(document, md) for document, md in parsed if isinstance(md, metadata.Metadata)]
    held = _held([md for _document, md in readable])

    def known(document: Document, md: metadata.Metadata) -> bool:
        return held.get(entry_key(md)) == document.raw

    book = key_book(issuer_fingerprint(md) for document, md in readable if not known(document, md))
    out: list[Future[_Checked] | _Checked] = []
    for document, md in parsed:
        if not isinstance(md, metadata.Metadata):
            out.append(md)
        elif known(document, md):
            out.append(_Checked(document.name, known=True))
        else:
            out.append(submit(_verify, document, md, book))
    return out


def _checked_chunks(documents: Iterable[Document], *, jobs: int) -> Iterator[list[_Checked]]:
    """Every document parsed, looked up and verified, in chunks (``_batched``), in the given order; with ``jobs`` > 1
    the next chunk is verified by ``jobs`` threads while the caller stores the one yielded."""

    def resolved(chunk: list[Future[_Checked] | _Checked]) -> list[_Checked]:
        return [item.result() if isinstance(item, Future) else item for item in chunk]

    if jobs <= 1:

        def inline(function: Callable[..., _Checked], *args: object) -> Future[_Checked]:
            done: Future[_Checked] = Future()
            done.set_result(function(*args))
            return done

        for chunk in _batched(documents):
            yield resolved(_chunk_submitted(chunk, inline))
        return
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="alto-import") as pool:
        try:
            ahead: deque[list[Future[_Checked] | _Checked]] = deque()
            for chunk in _batched(documents):
                ahead.append(_chunk_submitted(chunk, pool.submit))
                if len(ahead) > 1:
                    yield resolved(ahead.popleft())
            while ahead:
                yield resolved(ahead.popleft())
        finally:
            # Each worker thread may have opened its own database connection: one closing task per thread (the
            # barrier keeps any thread from taking two).
            barrier = threading.Barrier(jobs)
            for closing in [pool.submit(_close_connection, barrier) for _ in range(jobs)]:
                closing.result()


def _batched(documents: Iterable[Document]) -> Iterator[list[Document]]:
    """Chunks of ``CHUNK`` documents, the first ones smaller (8, 16, …), so that gpg starts early."""
    chunk: list[Document] = []
    size = min(8, CHUNK)
    for document in documents:
        chunk.append(document)
        if len(chunk) >= size:
            yield chunk
            chunk, size = [], min(2 * size, CHUNK)
    if chunk:
        yield chunk


def _close_connection(barrier: threading.Barrier) -> None:
    barrier.wait(timeout=60)
    connection.close()
