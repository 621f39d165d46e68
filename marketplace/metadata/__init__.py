"""The Marketplace's entry format (DESIGN.md §2.1): the rules of the shared package ``alto_metadata``, which the
``alto`` client applies too, with this site's settings and the server's error type.

Everything is re-exported from ``alto_metadata``; the functions that read a document take their defaults from
the settings (``MARKETPLACE_MAX_ENTRY_BYTES``, ``MARKETPLACE_FILE_LOCATION_DIRS``) when a caller does not pass
them, and raise :class:`MetadataInvalid`, an :class:`~core.errors.ApplicationError` that the API renders as
400 with every problem (``errors``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TypeVar

import alto_metadata as _shared
from alto_metadata import (
    ALGORITHMS,
    COMPRESSIONS,
    DCTERMS,
    DEFAULT_MAX_BYTES,
    DISKS_BUSES,
    DSIG,
    FORMATS,
    ID_ALPHABET,
    ID_LENGTH,
    KINDS,
    MAX_DEPTH,
    NOTATION,
    NS,
    OPENPGP_SIGNATURE,
    RDF,
    SIG,
    SIGNATURE_ELEMENTS,
    SLREQ,
    SLTERMS,
    XINCLUDE,
    XML,
    XML_BASE,
    Checksum,
    Endorsement,
    Metadata,
    Problem,
    build,
    build_for_file,
    detect_compression,
    file_checksums,
    format_date,
    identifier_from_sha1,
    is_identifier,
    notation_value,
    parse_date,
    rebuild,
    sha1_from_identifier,
    signature_element,
)
from django.conf import settings
from lxml import etree

from core.errors import ApplicationError
from marketplace.metadata.locations import allowed_file_dirs

_T = TypeVar("_T")


class MetadataInvalid(ApplicationError, _shared.MetadataInvalid):
    """The document breaks one or more rules of DESIGN.md §2.1; ``problems`` lists every one found (HTTP 400)."""

    status = 400
    default_code = "metadata-invalid"

    def __init__(self, problems: Iterable[Problem]) -> None:
        _shared.MetadataInvalid.__init__(self, problems)
        self.extra = {"errors": [p.as_dict() for p in self.problems]}


@contextmanager
def _as_server_error() -> Iterator[None]:
    try:
        yield
    except MetadataInvalid:
        raise
    except _shared.MetadataInvalid as invalid:
        raise MetadataInvalid(invalid.problems) from None


def _max_bytes(max_bytes: int | None) -> int:
    return int(getattr(settings, "MARKETPLACE_MAX_ENTRY_BYTES", DEFAULT_MAX_BYTES)) if max_bytes is None else max_bytes


def _guarded(call: Callable[[], _T]) -> _T:
    with _as_server_error():
        return call()


def xml_root(raw: bytes, *, max_bytes: int | None = None) -> etree._Element:
    """:func:`alto_metadata.xml_root` with the site's size limit."""
    return _guarded(lambda: _shared.xml_root(raw, max_bytes=_max_bytes(max_bytes)))


def check(
    raw: bytes, *, max_bytes: int | None = None, file_location_dirs: Iterable[str] | None = None
) -> tuple[Metadata | None, list[Problem]]:
    """:func:`alto_metadata.check` with the site's size limit and ``file:`` directories unless given."""
    return _shared.check(raw, max_bytes=_max_bytes(max_bytes), file_location_dirs=allowed_file_dirs(file_location_dirs))


def parse(raw: bytes, *, max_bytes: int | None = None, file_location_dirs: Iterable[str] | None = None) -> Metadata:
    """:func:`alto_metadata.parse` with the site's settings; raises :class:`MetadataInvalid`."""
    metadata, problems = check(raw, max_bytes=max_bytes, file_location_dirs=file_location_dirs)
    if problems or metadata is None:
        raise MetadataInvalid(problems)
    return metadata


def signed_bytes(raw: bytes) -> bytes:
    """:func:`alto_metadata.signed_bytes` with the site's size limit."""
    return _guarded(lambda: _shared.signed_bytes(raw, max_bytes=_max_bytes(None)))


def endorse(raw: bytes, *, email: str, subject: str, issuer: str, created: datetime) -> bytes:
    """:func:`alto_metadata.endorse` with the site's size limit."""
    return _guarded(
        lambda: _shared.endorse(
            raw, email=email, subject=subject, issuer=issuer, created=created, max_bytes=_max_bytes(None)
        )
    )


def attach_signature(raw: bytes, armored: str) -> bytes:
    """:func:`alto_metadata.attach_signature` with the site's size limit."""
    return _guarded(lambda: _shared.attach_signature(raw, armored, max_bytes=_max_bytes(None)))


__all__ = [
    "RDF",
    "DCTERMS",
    "SLREQ",
    "SLTERMS",
    "SIG",
    "DSIG",
    "XML",
    "XINCLUDE",
    "NS",
    "XML_BASE",
    "DEFAULT_MAX_BYTES",
    "MAX_DEPTH",
    "SIGNATURE_ELEMENTS",
    "OPENPGP_SIGNATURE",
    "NOTATION",
    "ALGORITHMS",
    "KINDS",
    "DISKS_BUSES",
    "COMPRESSIONS",
    "FORMATS",
    "ID_ALPHABET",
    "ID_LENGTH",
    "Problem",
    "MetadataInvalid",
    "Checksum",
    "Endorsement",
    "Metadata",
    "format_date",
    "parse_date",
    "notation_value",
    "identifier_from_sha1",
    "sha1_from_identifier",
    "is_identifier",
    "detect_compression",
    "file_checksums",
    "xml_root",
    "check",
    "parse",
    "build",
    "rebuild",
    "build_for_file",
    "signature_element",
    "signed_bytes",
    "endorse",
    "attach_signature",
]
