"""StratusLab-compatible metadata entries (DESIGN.md §2.1): parse, validate, build; the identifier.

Pure: no database, no gpg. Everything that reads entry XML goes through :func:`xml_root`, which refuses
hostile input (size, DTDs, entities, deep nesting, non-XML) before lxml does any real work, and anything the
signature would not cover (bytes outside rdf:RDF, encodings other than UTF-8). Django settings are read only
for defaults a caller does not pass (``max_bytes``, ``file_location_dirs``).
"""

from __future__ import annotations

from marketplace.metadata.guard import xml_root
from marketplace.metadata.identity import (
    detect_compression,
    file_checksums,
    identifier_from_sha1,
    is_identifier,
    sha1_from_identifier,
)
from marketplace.metadata.reader import check, parse
from marketplace.metadata.vocabulary import (
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
    parse_date,
)
from marketplace.metadata.writer import (
    attach_signature,
    build,
    build_for_file,
    endorse,
    rebuild,
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
