"""StratusLab-compatible metadata entries (DESIGN.md §2.1): parse, validate, build; the identifier; the bytes an
enveloped OpenPGP signature covers (§2.2).

The one set of rules that both the Altostratus server and the ``alto`` client apply, so that a document the
client calls valid is one the server accepts, with the same rule names and messages. Pure: no database, no
gpg, no Django; the only dependency is lxml. Everything that reads entry XML goes through :func:`xml_root`,
which refuses hostile input (size, DTDs, entities, deep nesting, non-XML) before lxml does any real work, and
anything the signature would not cover (bytes outside rdf:RDF, encodings other than UTF-8).
"""

from __future__ import annotations

from alto_metadata.guard import xml_root
from alto_metadata.identity import (
    detect_compression,
    file_checksums,
    identifier_from_sha1,
    is_identifier,
    sha1_from_identifier,
)
from alto_metadata.locations import WEB_SCHEMES, allowed_file_dirs, location_problem
from alto_metadata.reader import check, parse
from alto_metadata.vocabulary import (
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
    MetadataInvalid,
    Problem,
    format_date,
    is_email_address,
    notation_value,
    parse_date,
)
from alto_metadata.writer import (
    attach_signature,
    build,
    build_for_file,
    endorse,
    rebuild,
    redeclared,
    signature_element,
    signed_bytes,
)

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
    "WEB_SCHEMES",
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
    "is_email_address",
    "notation_value",
    "allowed_file_dirs",
    "location_problem",
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
    "redeclared",
    "build_for_file",
    "signature_element",
    "signed_bytes",
    "endorse",
    "attach_signature",
]
