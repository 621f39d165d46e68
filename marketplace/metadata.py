"""StratusLab-compatible metadata entries (DESIGN.md §2.1): parse, validate, build; the identifier.

Pure: no database, no gpg. Everything that reads entry XML goes through :func:`xml_root`, which refuses
hostile input (size, DTDs, entities, deep nesting, non-XML) before lxml does any real work.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from lxml import etree

from core.errors import ApplicationError

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DCTERMS = "http://purl.org/dc/terms/"
SLREQ = "http://mp.stratuslab.eu/slreq#"
SLTERMS = "http://mp.stratuslab.eu/slterms#"
SIG = "http://altostratus.dev/ns/pgp#"
DSIG = "http://www.w3.org/2000/09/xmldsig#"
XML = "http://www.w3.org/XML/1998/namespace"
XINCLUDE = ("http://www.w3.org/2001/XInclude", "http://www.w3.org/2003/XInclude")
NS = {"rdf": RDF, "dcterms": DCTERMS, "slreq": SLREQ, "slterms": SLTERMS, "sig": SIG}
_PREFIX = {RDF: "rdf", DCTERMS: "dcterms", SLREQ: "slreq", SLTERMS: "slterms", SIG: "sig", DSIG: "ds"}

XML_BASE = "http://mp.stratuslab.eu/"
DEFAULT_MAX_BYTES = 1024 * 1024
# StratusLab entries are five levels deep; anything far deeper is an attack, not metadata.
MAX_DEPTH = 32

# The signature elements a document may end with, and the kind each denotes (DESIGN.md §2.2).
SIGNATURE_ELEMENTS = {f"{{{SIG}}}Signature": "openpgp", f"{{{DSIG}}}Signature": "xmldsig"}
OPENPGP_SIGNATURE = f"{{{SIG}}}Signature"

# Checksum algorithms and the number of hex digits of each digest.
ALGORITHMS = {"MD5": 32, "SHA-1": 40, "SHA-256": 64, "SHA-512": 128}
_HASHLIB = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}

KINDS = ("machine", "disk")
DISKS_BUSES = ("ide", "scsi", "virtio")
COMPRESSIONS = ("gz", "bz2", "xz")
FORMATS = ("raw", "qcow2")

ID_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
ID_LENGTH = 27
_ID_RE = re.compile(r"[A-Za-z0-9_-]{27}")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_ISSUER_RE = re.compile(r"OpenPGP:[0-9A-Fa-f]{40}")


# ---------------------------------------------------------------------------------------------------------------
# Problems


@dataclass(frozen=True)
class Problem:
    """One broken rule: ``rule`` is the stable name, ``message`` a sentence naming the element and value."""

    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


class MetadataInvalid(ApplicationError):
    """The document breaks one or more rules of DESIGN.md §2.1; ``problems`` lists every one found."""

    status = 400
    default_code = "metadata-invalid"

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        if not self.problems:
            raise ValueError("MetadataInvalid needs at least one problem")
        first = self.problems[0]
        message = first.message
        if len(self.problems) > 1:
            message = f"{message} (and {len(self.problems) - 1} more problem(s))"
        super().__init__(message, code=first.rule, extra={"errors": [p.as_dict() for p in self.problems]})


# ---------------------------------------------------------------------------------------------------------------
# Identifier and checksums


def identifier_from_sha1(sha1_hex: str) -> str:
    """The 27-character identifier of an image: its SHA-1 as a 160-bit number in radix 64 (DESIGN.md §2.1).

    Leading zeros of the hex value do not matter: "00ab" and "ab" denote the same number."""
    if not isinstance(sha1_hex, str) or not _HEX_RE.fullmatch(sha1_hex) or len(sha1_hex.lstrip("0")) > 40:
        raise ValueError(f"not a SHA-1 hex digest: {sha1_hex!r}")
    number = int(sha1_hex, 16)
    digits = []
    for _ in range(ID_LENGTH):
        number, digit = divmod(number, 64)
        digits.append(ID_ALPHABET[digit])
    return "".join(reversed(digits))


def sha1_from_identifier(identifier: str) -> str:
    """The inverse of :func:`identifier_from_sha1`: the 40-digit lower-case SHA-1 hex the identifier encodes."""
    if not _ID_RE.fullmatch(identifier):
        raise ValueError(f"not an identifier: {identifier!r}")
    number = 0
    for char in identifier:
        number = number * 64 + ID_ALPHABET.index(char)
    if number >= 1 << 160:
        raise ValueError(f"identifier {identifier!r} is larger than a 160-bit SHA-1")
    return f"{number:040x}"


def is_identifier(value: str) -> bool:
    """Whether ``value`` is a well-formed identifier (27 radix-64 digits encoding at most 160 bits)."""
    try:
        sha1_from_identifier(value)
    except ValueError:
        return False
    return True


_MAGIC: tuple[tuple[bytes, str], ...] = ((b"\x1f\x8b", "gz"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"))


def detect_compression(path: str | Path) -> str:
    """``gz``, ``bz2``, ``xz`` from the file's magic bytes, or ``""`` for an uncompressed file."""
    with open(path, "rb") as handle:
        head = handle.read(6)
    return next((name for magic, name in _MAGIC if head.startswith(magic)), "")


def _open_uncompressed(path: Path, compression: str) -> BinaryIO:
    if compression == "gz":
        return cast(BinaryIO, gzip.open(path, "rb"))
    if compression == "bz2":
        return cast(BinaryIO, bz2.open(path, "rb"))
    if compression == "xz":
        return cast(BinaryIO, lzma.open(path, "rb"))
    return open(path, "rb")  # noqa: SIM115 - returned to the caller's with-block


def file_checksums(path: str | Path, algorithms: Iterable[str] = ("SHA-1", "SHA-256")) -> tuple[int, dict[str, str]]:
    """(uncompressed size in bytes, {algorithm: lower-case hex}) of an image file, read once in chunks.

    A gzip, bzip2 or xz file is decompressed on the fly: the identifier and checksums describe the image."""
    names = list(algorithms)
    unknown = [name for name in names if name not in ALGORITHMS]
    if unknown:
        raise ValueError(f"unknown checksum algorithm(s) {unknown}; use {sorted(ALGORITHMS)}")
    path = Path(path)
    hashers = {name: hashlib.new(_HASHLIB[name], usedforsecurity=name != "MD5") for name in names}
    size = 0
    with _open_uncompressed(path, detect_compression(path)) as stream:
        while chunk := stream.read(1024 * 1024):
            size += len(chunk)
            for hasher in hashers.values():
                hasher.update(chunk)
    return size, {name: hasher.hexdigest() for name, hasher in hashers.items()}


# ---------------------------------------------------------------------------------------------------------------
# The parsed entry


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    value: str  # lower-case hex, left-padded with zeros to the digest's full length


@dataclass(frozen=True)
class Endorsement:
    email: str
    subject: str
    issuer: str
    created: datetime  # aware, UTC


@dataclass(frozen=True)
class Metadata:
    """A valid entry's fields. Optional text fields are ``""`` when absent; ``deprecated`` is None then."""

    identifier: str
    bytes: int
    checksums: tuple[Checksum, ...]
    endorsement: Endorsement
    type: str
    valid: datetime | None
    title: str
    description: str
    creator: str
    created: datetime | None
    publisher: str
    format: str
    compression: str
    alternative: str
    replaces: str
    is_replaced_by: str
    is_version_of: str
    locations: tuple[str, ...]
    serial_number: str
    version: str
    hypervisor: str
    inbound_ports: tuple[int, ...]
    outbound_ports: tuple[int, ...]
    icmp: tuple[int, ...]
    os: str
    os_version: str
    os_arch: str
    deprecated: str | None
    disks_bus: str
    kind: str
    signature_kind: str  # "none" | "openpgp" | "xmldsig"
    # Advice that does not make the entry invalid (e.g. no SHA-256 checksum).
    warnings: tuple[Problem, ...] = ()
    # Elements in other namespaces, kept in the raw bytes: (Clark name "{ns}local", text).
    extensions: tuple[tuple[str, str], ...] = ()

    @property
    def sha1(self) -> str:
        return self.checksum("SHA-1") or ""

    @property
    def sha256(self) -> str | None:
        return self.checksum("SHA-256")

    @property
    def is_signed(self) -> bool:
        return self.signature_kind != "none"

    def checksum(self, algorithm: str) -> str | None:
        return next((c.value for c in self.checksums if c.algorithm == algorithm), None)


# ---------------------------------------------------------------------------------------------------------------
# Hostile-input guard


class _Refused(Exception):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(rule, message)


def _parser() -> etree.XMLParser:
    # DESIGN.md §2.3: no entity expansion, no network, no DTD loading, libxml2's size/depth limits kept.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
        remove_pis=False,
        strip_cdata=True,
    )


def _scan_prolog(raw: bytes) -> None:
    """Refuse a document type declaration by looking only at the prolog, before lxml parses anything."""
    i = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    length = len(raw)
    while i < length:
        if raw[i] in b" \t\r\n":
            i += 1
        elif raw.startswith(b"<?", i):
            end = raw.find(b"?>", i + 2)
            if end < 0:
                raise _Refused("not-xml", "The document is not XML: a processing instruction is never closed.")
            i = end + 2
        elif raw.startswith(b"<!--", i):
            end = raw.find(b"-->", i + 4)
            if end < 0:
                raise _Refused("not-xml", "The document is not XML: a comment is never closed.")
            i = end + 3
        elif raw.startswith(b"<!DOCTYPE", i):
            if b"<!ENTITY" in raw:
                raise _Refused(
                    "entity-forbidden",
                    "The document declares XML entities (<!ENTITY>); entities are not allowed in entries.",
                )
            raise _Refused(
                "dtd-forbidden", "The document has a document type declaration (<!DOCTYPE>); DTDs are not allowed."
            )
        else:
            return


def _depth_exceeds(root: etree._Element, limit: int) -> bool:
    stack: list[tuple[etree._Element, int]] = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in element)
    return False


def _max_bytes(max_bytes: int | None) -> int:
    if max_bytes is not None:
        return max_bytes
    return int(getattr(settings, "MARKETPLACE_MAX_ENTRY_BYTES", DEFAULT_MAX_BYTES))


def _guarded_root(raw: bytes, max_bytes: int | None) -> etree._Element:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError("entry documents are bytes")
    raw = bytes(raw)
    limit = _max_bytes(max_bytes)
    if len(raw) > limit:
        raise _Refused("too-large", f"The document is {len(raw)} bytes; entries may be at most {limit} bytes.")
    if not raw.strip():
        raise _Refused("not-xml", "The document is empty.")
    if b"\x00" in raw:
        raise _Refused("not-xml", "The document is not XML text: it contains NUL bytes (binary data or UTF-16/32).")
    _scan_prolog(raw)
    try:
        root = etree.fromstring(raw, _parser())
    except etree.XMLSyntaxError as exc:
        error = exc.error_log.last_error if exc.error_log else None
        type_name = error.type_name if error is not None else ""
        if type_name == "ERR_RESOURCE_LIMIT" or "depth" in str(exc).lower():
            raise _Refused(
                "too-deep", f"The document nests elements too deeply (at most {MAX_DEPTH} levels): {exc}"
            ) from None
        if "ENTITY" in type_name:
            raise _Refused(
                "entity-forbidden", f"The document refers to an XML entity, which is not allowed: {exc}"
            ) from None
        raise _Refused("not-xml", f"The document is not well-formed XML: {exc}") from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None or tree.docinfo.externalDTD is not None:
        raise _Refused("dtd-forbidden", "The document has a document type declaration; DTDs are not allowed.")
    if _depth_exceeds(root, MAX_DEPTH):
        raise _Refused("too-deep", f"The document nests elements more than {MAX_DEPTH} levels deep.")
    for node in root.iter():
        if isinstance(node, etree._Entity):
            raise _Refused("entity-forbidden", f"The document refers to the XML entity {node.text}.")
        if isinstance(node.tag, str) and etree.QName(node).namespace in XINCLUDE:
            raise _Refused("external-reference", "The document uses XInclude; external references are not allowed.")
    return root


def xml_root(raw: bytes, *, max_bytes: int | None = None) -> etree._Element:
    """The document's root element, parsed safely; raises :class:`MetadataInvalid` on hostile input."""
    try:
        return _guarded_root(raw, max_bytes)
    except _Refused as refused:
        raise MetadataInvalid([refused.problem]) from None


# ---------------------------------------------------------------------------------------------------------------
# Validation


def _name(tag: str) -> str:
    qname = etree.QName(tag)
    prefix = _PREFIX.get(qname.namespace or "")
    return f"{prefix}:{qname.localname}" if prefix else tag


def format_date(value: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC (the only date form entries use)."""
    if value.tzinfo is None:
        raise ValueError("dates in entries must be timezone-aware")
    return value.astimezone(UTC).strftime(_DATE_FORMAT)


def parse_date(text: str) -> datetime:
    """The aware UTC datetime of a ``YYYY-MM-DDTHH:MM:SSZ`` string; ValueError for anything else."""
    if not _DATE_RE.fullmatch(text):
        raise ValueError(text)
    return datetime.strptime(text, _DATE_FORMAT).replace(tzinfo=UTC)


def _text_children(element: etree._Element) -> Iterator[etree._Element]:
    return (child for child in element if isinstance(child.tag, str))


# Single-valued text elements of rdf:Description: Clark name -> Metadata field.
_SINGLE: dict[str, str] = {
    f"{{{DCTERMS}}}identifier": "identifier",
    f"{{{SLREQ}}}bytes": "bytes",
    f"{{{DCTERMS}}}type": "type",
    f"{{{DCTERMS}}}valid": "valid",
    f"{{{DCTERMS}}}title": "title",
    f"{{{DCTERMS}}}description": "description",
    f"{{{DCTERMS}}}creator": "creator",
    f"{{{DCTERMS}}}created": "created",
    f"{{{DCTERMS}}}publisher": "publisher",
    f"{{{DCTERMS}}}format": "format",
    f"{{{DCTERMS}}}compression": "compression",
    f"{{{DCTERMS}}}alternative": "alternative",
    f"{{{DCTERMS}}}replaces": "replaces",
    f"{{{DCTERMS}}}isReplacedBy": "is_replaced_by",
    f"{{{DCTERMS}}}isVersionOf": "is_version_of",
    f"{{{SLTERMS}}}serial-number": "serial_number",
    f"{{{SLTERMS}}}version": "version",
    f"{{{SLTERMS}}}hypervisor": "hypervisor",
    f"{{{SLTERMS}}}os": "os",
    f"{{{SLTERMS}}}os-version": "os_version",
    f"{{{SLTERMS}}}os-arch": "os_arch",
    f"{{{SLTERMS}}}deprecated": "deprecated",
    f"{{{SLTERMS}}}disks-bus": "disks_bus",
    f"{{{SLTERMS}}}kind": "kind",
}
_MULTI: dict[str, str] = {
    f"{{{SLTERMS}}}location": "locations",
    f"{{{SLTERMS}}}inbound-port": "inbound_ports",
    f"{{{SLTERMS}}}outbound-port": "outbound_ports",
    f"{{{SLTERMS}}}icmp": "icmp",
}
_CHECKSUM = f"{{{SLREQ}}}checksum"
_ENDORSEMENT = f"{{{SLREQ}}}endorsement"
_ENDORSER = f"{{{SLREQ}}}endorser"
_PARSE_TYPE = f"{{{RDF}}}parseType"
_ABOUT = f"{{{RDF}}}about"
_DESCRIPTION = f"{{{RDF}}}Description"
_RDF_ROOT = f"{{{RDF}}}RDF"
_STRICT_NAMESPACES = (SLREQ, SLTERMS)


class _Reader:
    """Reads one document, collecting every problem rather than stopping at the first."""

    def __init__(self, root: etree._Element) -> None:
        self.root = root
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.extensions: list[tuple[str, str]] = []

    def problem(self, rule: str, message: str) -> None:
        self.problems.append(Problem(rule, message))

    def text(self, element: etree._Element) -> str:
        """The text of a simple element (comments allowed, child elements not)."""
        if any(isinstance(child.tag, str) for child in element):
            self.problem(f"not-text:{etree.QName(element).localname}", f"{_name(element.tag)} must hold text only.")
        parts = [element.text or ""] + [child.tail or "" for child in element]
        return "".join(parts).strip()

    def group(self, parent: etree._Element, allowed: dict[str, str]) -> dict[str, list[etree._Element]]:
        """Children of ``parent`` by Clark name; unknown ones in our namespaces are problems, others kept."""
        found: dict[str, list[etree._Element]] = {}
        for child in _text_children(parent):
            tag = child.tag
            if tag in allowed:
                found.setdefault(tag, []).append(child)
            elif etree.QName(child).namespace in _STRICT_NAMESPACES:
                local = etree.QName(child).localname
                self.problem(
                    f"unknown-element:{local}",
                    f"{_name(tag)} is not a StratusLab element allowed inside {_name(parent.tag)}.",
                )
            else:
                self.extensions.append((tag, "".join(child.itertext()).strip()))
        return found

    def single(
        self, found: dict[str, list[etree._Element]], tag: str, *, required: bool, where: str
    ) -> etree._Element | None:
        elements = found.get(tag, [])
        local = etree.QName(tag).localname
        if not elements:
            if required:
                self.problem(f"missing:{local}", f"{_name(tag)} is required in {where} but missing.")
            return None
        if len(elements) > 1:
            self.problem(f"too-many:{local}", f"{_name(tag)} may appear once in {where}; found {len(elements)}.")
        return elements[0]

    def parse_type(self, element: etree._Element) -> None:
        if element.get(_PARSE_TYPE) != "Resource":
            local = etree.QName(element).localname
            self.problem(f"parse-type:{local}", f'{_name(element.tag)} must have rdf:parseType="Resource".')

    def date(self, element: etree._Element | None) -> datetime | None:
        if element is None:
            return None
        value = self.text(element)
        try:
            return parse_date(value)
        except ValueError:
            self.problem(
                "date-format",
                f"{_name(element.tag)} is {value!r}; dates are YYYY-MM-DDTHH:MM:SSZ (UTC), e.g. 2014-05-30T12:00:00Z.",
            )
            return None

    # -- the document -------------------------------------------------------------------------------------------

    def read(self) -> dict[str, Any] | None:
        root = self.root
        if root.tag != _RDF_ROOT:
            self.problem("root-element", f"The root element is {_name(root.tag)}; entries start with rdf:RDF.")
            return None
        base = root.get(f"{{{XML}}}base")
        if base != XML_BASE:
            self.problem("xml-base", f'rdf:RDF must have xml:base="{XML_BASE}"; found {base!r}.')

        signature_kind = self.read_signatures()
        descriptions = [child for child in _text_children(root) if child.tag == _DESCRIPTION]
        for child in _text_children(root):
            if child.tag in (_DESCRIPTION, *SIGNATURE_ELEMENTS):
                continue
            if etree.QName(child).namespace in (RDF, *_STRICT_NAMESPACES):
                local = etree.QName(child).localname
                self.problem(f"unknown-element:{local}", f"{_name(child.tag)} is not allowed inside rdf:RDF.")
            else:
                self.extensions.append((child.tag, "".join(child.itertext()).strip()))
        if not descriptions:
            self.problem("missing:Description", "rdf:RDF must hold one rdf:Description; none found.")
            return None
        if len(descriptions) > 1:
            self.problem(
                "too-many:Description", f"rdf:RDF must hold exactly one rdf:Description; found {len(descriptions)}."
            )
        fields = self.read_description(descriptions[0])
        fields["signature_kind"] = signature_kind
        return fields

    def read_signatures(self) -> str:
        children = list(_text_children(self.root))
        signatures = [child for child in children if child.tag in SIGNATURE_ELEMENTS]
        if not signatures:
            return "none"
        if len(signatures) > 1:
            self.problem("too-many:Signature", f"An entry carries one signature element; found {len(signatures)}.")
        if children[-1] is not signatures[-1] or len(signatures) > 1:
            self.problem("signature-position", "The signature element must be the last child of rdf:RDF.")
        return SIGNATURE_ELEMENTS[signatures[-1].tag]

    def read_description(self, description: etree._Element) -> dict[str, Any]:
        where = "rdf:Description"
        found = self.group(
            description, {**dict.fromkeys(_SINGLE, ""), **dict.fromkeys(_MULTI, ""), _CHECKSUM: "", _ENDORSEMENT: ""}
        )
        fields: dict[str, Any] = {}
        required = {f"{{{DCTERMS}}}identifier", f"{{{SLREQ}}}bytes", f"{{{DCTERMS}}}type"}
        raw_text: dict[str, str | None] = {}
        elements: dict[str, etree._Element | None] = {}
        for tag, name in _SINGLE.items():
            element = self.single(found, tag, required=tag in required, where=where)
            elements[name] = element
            raw_text[name] = None if element is None else self.text(element)
        for name in (
            "title",
            "description",
            "creator",
            "publisher",
            "alternative",
            "version",
            "hypervisor",
            "os",
            "os_version",
            "os_arch",
        ):
            fields[name] = raw_text[name] or ""

        fields["identifier"] = identifier = raw_text["identifier"] or ""
        if elements["identifier"] is not None and not is_identifier(identifier):
            self.problem(
                "identifier-format",
                f"dcterms:identifier is {identifier!r}; identifiers are 27 characters of A-Z a-z 0-9 - _ "
                "encoding a SHA-1.",
            )
        about = description.get(_ABOUT)
        if identifier and about != f"#{identifier}":
            self.problem(
                "about-identifier",
                f'rdf:Description rdf:about is {about!r}; it must be "#{identifier}" (# and the identifier).',
            )

        fields["bytes"] = self.integer(elements["bytes"], raw_text["bytes"], rule="bytes-format", maximum=None)
        type_ = raw_text["type"]
        if type_ == "":
            self.problem("empty:type", "dcterms:type is empty; give the image's category, e.g. base.")
        fields["type"] = type_ or ""
        fields["valid"] = self.date(elements["valid"])
        fields["created"] = self.date(elements["created"])

        fields["format"] = self.choice(elements["format"], raw_text["format"], "format", FORMATS)
        fields["kind"] = self.choice(elements["kind"], raw_text["kind"], "kind", KINDS)
        fields["disks_bus"] = self.choice(elements["disks_bus"], raw_text["disks_bus"], "disks-bus", DISKS_BUSES)
        compression = raw_text["compression"] or ""
        if compression and compression not in COMPRESSIONS:
            self.problem(
                "compression",
                f"dcterms:compression is {compression!r}; use one of {', '.join(COMPRESSIONS)} or leave it empty.",
            )
        fields["compression"] = compression

        for name, tag in (
            ("replaces", "replaces"),
            ("is_replaced_by", "isReplacedBy"),
            ("is_version_of", "isVersionOf"),
        ):
            value = raw_text[name] or ""
            if elements[name] is not None and not is_identifier(value):
                self.problem("reference-format", f"dcterms:{tag} is {value!r}; it must be an image identifier.")
            fields[name] = value

        serial = raw_text["serial_number"] or ""
        if elements["serial_number"] is not None and not serial.isdigit():
            self.problem(
                "serial-number-format", f"slterms:serial-number is {serial!r}; it must be a non-negative integer."
            )
        fields["serial_number"] = serial

        deprecated = raw_text["deprecated"]
        if deprecated == "":
            self.problem("deprecated-reason", "slterms:deprecated is empty; say why the image is deprecated.")
        fields["deprecated"] = deprecated

        fields["locations"] = self.locations(found.get(f"{{{SLTERMS}}}location", []))
        fields["inbound_ports"] = self.numbers(found, "inbound-port", "port-range", 65535)
        fields["outbound_ports"] = self.numbers(found, "outbound-port", "port-range", 65535)
        fields["icmp"] = self.numbers(found, "icmp", "icmp-range", 255)

        fields["checksums"] = self.checksums(found.get(_CHECKSUM, []))
        sha1 = next((c.value for c in fields["checksums"] if c.algorithm == "SHA-1"), None)
        if sha1 is not None and is_identifier(identifier) and identifier_from_sha1(sha1) != identifier:
            self.problem(
                "identifier-mismatch",
                f"dcterms:identifier {identifier} does not match the SHA-1 checksum {sha1} "
                f"(which gives {identifier_from_sha1(sha1)}).",
            )
        endorsement = self.single(found, _ENDORSEMENT, required=True, where=where)
        fields["endorsement"] = self.endorsement(endorsement) if endorsement is not None else None
        return fields

    def integer(
        self, element: etree._Element | None, value: str | None, *, rule: str, maximum: int | None
    ) -> int | None:
        if element is None or value is None:
            return None
        if not value.isascii() or not value.isdigit() or (maximum is not None and int(value) > maximum):
            limit = "a non-negative integer" if maximum is None else f"an integer from 0 to {maximum}"
            self.problem(rule, f"{_name(element.tag)} is {value!r}; it must be {limit}.")
            return None
        return int(value)

    def numbers(self, found: dict[str, list[etree._Element]], local: str, rule: str, maximum: int) -> tuple[int, ...]:
        values = []
        for element in found.get(f"{{{SLTERMS}}}{local}", []):
            number = self.integer(element, self.text(element), rule=rule, maximum=maximum)
            if number is not None:
                values.append(number)
        return tuple(values)

    def choice(self, element: etree._Element | None, value: str | None, rule: str, allowed: tuple[str, ...]) -> str:
        if element is None:
            return ""
        if value not in allowed:
            self.problem(rule, f"{_name(element.tag)} is {value!r}; use one of {', '.join(allowed)}.")
            return ""
        return value

    def locations(self, elements: list[etree._Element]) -> tuple[str, ...]:
        values = []
        for element in elements:
            value = self.text(element)
            if not _URI_RE.fullmatch(value):
                self.problem("location-format", f"slterms:location is {value!r}; it must be an absolute URL.")
            else:
                values.append(value)
        return tuple(values)

    def checksums(self, elements: list[etree._Element]) -> tuple[Checksum, ...]:
        where = "slreq:checksum"
        if not elements:
            self.problem("missing:checksum", "slreq:checksum is required (at least one, with a SHA-1) but missing.")
            return ()
        checksums: list[Checksum] = []
        for element in elements:
            self.parse_type(element)
            found = self.group(element, {f"{{{SLREQ}}}algorithm": "", f"{{{SLREQ}}}value": ""})
            algorithm_el = self.single(found, f"{{{SLREQ}}}algorithm", required=True, where=where)
            value_el = self.single(found, f"{{{SLREQ}}}value", required=True, where=where)
            if algorithm_el is None or value_el is None:
                continue
            algorithm = self.text(algorithm_el)
            value = self.text(value_el)
            if algorithm not in ALGORITHMS:
                self.problem(
                    "checksum-algorithm",
                    f"slreq:algorithm is {algorithm!r}; use one of {', '.join(ALGORITHMS)}.",
                )
                continue
            digits = ALGORITHMS[algorithm]
            if not _HEX_RE.fullmatch(value) or len(value.lstrip("0")) > digits:
                self.problem(
                    "checksum-value",
                    f"The {algorithm} checksum value {value!r} is not a hex number of at most {digits} digits.",
                )
                continue
            checksums.append(Checksum(algorithm, value.lower().lstrip("0").rjust(digits, "0")))
        sha1_count = sum(1 for c in checksums if c.algorithm == "SHA-1")
        if sha1_count != 1 and not any(p.rule in ("checksum-algorithm", "checksum-value") for p in self.problems):
            self.problem("sha1-count", f"An entry has exactly one SHA-1 checksum; found {sha1_count}.")
        seen: set[str] = set()
        for checksum in checksums:
            if checksum.algorithm in seen and checksum.algorithm != "SHA-1":
                self.problem("checksum-duplicate", f"The {checksum.algorithm} checksum is given more than once.")
            seen.add(checksum.algorithm)
        if checksums and "SHA-256" not in seen:
            self.warnings.append(
                Problem("sha256-recommended", "No SHA-256 checksum: SHA-256 is strongly recommended beside SHA-1.")
            )
        return tuple(checksums)

    def endorsement(self, element: etree._Element) -> Endorsement | None:
        where = "slreq:endorsement"
        self.parse_type(element)
        found = self.group(element, {f"{{{DCTERMS}}}created": "", _ENDORSER: ""})
        created = self.date(self.single(found, f"{{{DCTERMS}}}created", required=True, where=where))
        endorser = self.single(found, _ENDORSER, required=True, where=where)
        if endorser is None:
            return None
        self.parse_type(endorser)
        tags = {f"{{{SLREQ}}}{local}": "" for local in ("email", "subject", "issuer")}
        found = self.group(endorser, tags)
        values: dict[str, str | None] = {}
        for local in ("email", "subject", "issuer"):
            child = self.single(found, f"{{{SLREQ}}}{local}", required=True, where="slreq:endorser")
            values[local] = None if child is None else self.text(child)
        email, subject, issuer = values["email"], values["subject"], values["issuer"]
        if email is not None:
            try:
                validate_email(email)
            except ValidationError:
                self.problem("email-format", f"slreq:email is {email!r}; it must be an e-mail address.")
        if issuer and issuer.startswith("OpenPGP:") and not _ISSUER_RE.fullmatch(issuer):
            self.problem(
                "issuer-format", f"slreq:issuer is {issuer!r}; OpenPGP issuers are OpenPGP:<40-hex fingerprint>."
            )
        if created is None or email is None or subject is None or issuer is None:
            return None
        return Endorsement(email=email.lower(), subject=subject, issuer=issuer, created=created)


def check(raw: bytes, *, max_bytes: int | None = None) -> tuple[Metadata | None, list[Problem]]:
    """Every problem of the document (empty when valid) and, when valid, its :class:`Metadata`."""
    try:
        root = _guarded_root(raw, max_bytes)
    except _Refused as refused:
        return None, [refused.problem]
    reader = _Reader(root)
    fields = reader.read()
    if reader.problems or fields is None:
        return None, reader.problems
    metadata = Metadata(**fields, warnings=tuple(reader.warnings), extensions=tuple(reader.extensions))
    return metadata, []


def parse(raw: bytes, *, max_bytes: int | None = None) -> Metadata:
    """The entry's :class:`Metadata`; raises :class:`MetadataInvalid` listing every broken rule."""
    metadata, problems = check(raw, max_bytes=max_bytes)
    if problems or metadata is None:
        raise MetadataInvalid(problems)
    return metadata


# ---------------------------------------------------------------------------------------------------------------
# Building, endorsing, signature plumbing


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrib: str) -> etree._Element:
    element = etree.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = text
    return element


def _indent_and_serialise(root: etree._Element) -> bytes:
    etree.indent(root, space="  ")
    root.tail = None
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8", pretty_print=True)


def build(
    *,
    image_bytes: int,
    checksums: dict[str, str],
    type: str,  # noqa: A002 - the element's name (dcterms:type)
    endorser_email: str = "",
    title: str = "",
    description: str = "",
    creator: str = "",
    os: str = "",
    os_version: str = "",
    os_arch: str = "",
    kind: str = "machine",
    format: str = "",  # noqa: A002 - dcterms:format
    compression: str = "",
    locations: Iterable[str] = (),
    valid: datetime | None = None,
    deprecated: str | None = None,
    replaces: str = "",
    version: str = "",
    hypervisor: str = "",
    disks_bus: str = "",
    **more: Any,
) -> bytes:
    """An unsigned entry in StratusLab layout; the identifier comes from the SHA-1 checksum.

    The endorsement is present with ``created`` = now and the given e-mail; signing fills it from the key.
    ``more`` takes the other optional fields by their :class:`Metadata` names (``publisher``, ``alternative``,
    ``is_replaced_by``, ``is_version_of``, ``serial_number``, ``inbound_ports``, ``outbound_ports``, ``icmp``,
    ``created``, ``endorsement_created``). The output is not validated here: :func:`parse` it."""
    extra: dict[str, Any] = {
        "publisher": "",
        "alternative": "",
        "is_replaced_by": "",
        "is_version_of": "",
        "serial_number": "",
        "inbound_ports": (),
        "outbound_ports": (),
        "icmp": (),
        "created": None,
        "endorsement_created": None,
    }
    unknown = set(more) - set(extra)
    if unknown:
        raise TypeError(f"build() got unexpected field(s) {sorted(unknown)}")
    extra.update(more)
    if "SHA-1" not in checksums:
        raise ValueError("build() needs the SHA-1 checksum: the identifier is derived from it")
    identifier = identifier_from_sha1(checksums["SHA-1"])

    root = etree.Element(f"{{{RDF}}}RDF", nsmap={k: v for k, v in NS.items() if k != "sig"})
    root.set(f"{{{XML}}}base", XML_BASE)
    desc = _sub(root, _DESCRIPTION, **{_ABOUT: f"#{identifier}"})
    _sub(desc, f"{{{DCTERMS}}}identifier", identifier)
    _sub(desc, f"{{{SLREQ}}}bytes", str(image_bytes))
    # SHA-1 first (the identifier's source), then the others in the order given.
    ordered = sorted(checksums.items(), key=lambda item: item[0] != "SHA-1")
    for algorithm, value in ordered:
        checksum = _sub(desc, _CHECKSUM, **{_PARSE_TYPE: "Resource"})
        _sub(checksum, f"{{{SLREQ}}}algorithm", algorithm)
        _sub(checksum, f"{{{SLREQ}}}value", value.lower())
    endorsement = _sub(desc, _ENDORSEMENT, **{_PARSE_TYPE: "Resource"})
    created_at = extra["endorsement_created"] or datetime.now(UTC)
    _sub(endorsement, f"{{{DCTERMS}}}created", format_date(created_at))
    endorser = _sub(endorsement, _ENDORSER, **{_PARSE_TYPE: "Resource"})
    _sub(endorser, f"{{{SLREQ}}}email", endorser_email)
    _sub(endorser, f"{{{SLREQ}}}subject", "")
    _sub(endorser, f"{{{SLREQ}}}issuer", "")
    _sub(desc, f"{{{DCTERMS}}}type", type)

    def optional(tag: str, value: str | None) -> None:
        if value:
            _sub(desc, tag, value)

    optional(f"{{{DCTERMS}}}valid", format_date(valid) if valid else None)
    optional(f"{{{DCTERMS}}}title", title)
    optional(f"{{{DCTERMS}}}description", description)
    optional(f"{{{DCTERMS}}}creator", creator)
    optional(f"{{{DCTERMS}}}created", format_date(extra["created"]) if extra["created"] else None)
    optional(f"{{{DCTERMS}}}publisher", extra["publisher"])
    optional(f"{{{DCTERMS}}}format", format)
    if compression or format:
        # An empty dcterms:compression states "not compressed", as stratus-build-metadata wrote it.
        _sub(desc, f"{{{DCTERMS}}}compression", compression)
    optional(f"{{{DCTERMS}}}alternative", extra["alternative"])
    optional(f"{{{DCTERMS}}}replaces", replaces)
    optional(f"{{{DCTERMS}}}isReplacedBy", extra["is_replaced_by"])
    optional(f"{{{DCTERMS}}}isVersionOf", extra["is_version_of"])
    for location in locations:
        _sub(desc, f"{{{SLTERMS}}}location", location)
    optional(f"{{{SLTERMS}}}serial-number", str(extra["serial_number"]) if extra["serial_number"] != "" else "")
    optional(f"{{{SLTERMS}}}version", version)
    optional(f"{{{SLTERMS}}}hypervisor", hypervisor)
    for port in extra["inbound_ports"]:
        _sub(desc, f"{{{SLTERMS}}}inbound-port", str(port))
    for port in extra["outbound_ports"]:
        _sub(desc, f"{{{SLTERMS}}}outbound-port", str(port))
    for icmp_type in extra["icmp"]:
        _sub(desc, f"{{{SLTERMS}}}icmp", str(icmp_type))
    optional(f"{{{SLTERMS}}}os", os)
    optional(f"{{{SLTERMS}}}os-version", os_version)
    optional(f"{{{SLTERMS}}}os-arch", os_arch)
    if deprecated is not None:
        _sub(desc, f"{{{SLTERMS}}}deprecated", deprecated)
    optional(f"{{{SLTERMS}}}disks-bus", disks_bus)
    optional(f"{{{SLTERMS}}}kind", kind)
    return _indent_and_serialise(root)


def rebuild(
    source: Metadata,
    *,
    endorser_email: str,
    endorsement_created: datetime,
    deprecated: str | None = None,
    valid: datetime | None = None,
) -> bytes:
    """An unsigned entry describing the image of ``source`` again, for another endorser.

    Everything about the image is copied (checksums, size, type, title, OS, kind, format, locations, …);
    what is the endorser's own word is not: their tag (``alternative``), expiry, deprecation and any
    extension elements. ``valid`` and ``deprecated`` are the new endorser's."""
    return build(
        image_bytes=source.bytes,
        checksums={c.algorithm: c.value for c in source.checksums},
        type=source.type,
        endorser_email=endorser_email,
        title=source.title,
        description=source.description,
        creator=source.creator,
        os=source.os,
        os_version=source.os_version,
        os_arch=source.os_arch,
        kind=source.kind,
        format=source.format,
        compression=source.compression,
        locations=source.locations,
        valid=valid,
        deprecated=deprecated,
        replaces=source.replaces,
        version=source.version,
        hypervisor=source.hypervisor,
        disks_bus=source.disks_bus,
        publisher=source.publisher,
        is_replaced_by=source.is_replaced_by,
        is_version_of=source.is_version_of,
        serial_number=source.serial_number,
        inbound_ports=source.inbound_ports,
        outbound_ports=source.outbound_ports,
        icmp=source.icmp,
        created=source.created,
        endorsement_created=endorsement_created,
    )


def build_for_file(path: str | Path, **fields: Any) -> bytes:
    """:func:`build` with the size and SHA-1 + SHA-256 of the (decompressed) image file at ``path``."""
    size, checksums = file_checksums(path)
    fields.setdefault("compression", detect_compression(path))
    return build(image_bytes=size, checksums=checksums, **fields)


def signature_element(root: etree._Element) -> etree._Element | None:
    """The signature element ending ``rdf:RDF``, if there is one."""
    children = list(_text_children(root))
    if children and children[-1].tag in SIGNATURE_ELEMENTS:
        return children[-1]
    return None


def _canonical(root: etree._Element) -> bytes:
    return etree.tostring(root, method="c14n", with_comments=True)


def signed_bytes(raw: bytes) -> bytes:
    """The bytes a signature covers: inclusive C14N (with comments) of rdf:RDF without the signature element
    and its tail text (DESIGN.md §2.2)."""
    root = xml_root(raw)
    signature = signature_element(root)
    if signature is not None:
        root.remove(signature)  # lxml removes the element's tail text with it
    return _canonical(root)


def endorse(raw: bytes, *, email: str, subject: str, issuer: str, created: datetime) -> bytes:
    """The unsigned document with its endorsement filled in (the step before signing)."""
    root = xml_root(raw)
    if signature_element(root) is not None:
        raise MetadataInvalid([Problem("already-signed", "The document is already signed; build a new entry.")])
    path = [_DESCRIPTION, _ENDORSEMENT]
    element: etree._Element | None = root
    for tag in path:
        element = element.find(tag) if element is not None else None
    if element is None:
        raise MetadataInvalid([Problem("missing:endorsement", "slreq:endorsement is required but missing.")])
    endorser = element.find(_ENDORSER)
    if endorser is None:
        endorser = _sub(element, _ENDORSER, **{_PARSE_TYPE: "Resource"})
    created_el = element.find(f"{{{DCTERMS}}}created")
    if created_el is None:
        created_el = _sub(element, f"{{{DCTERMS}}}created")
    created_el.text = format_date(created)
    for local, value in (("email", email), ("subject", subject), ("issuer", issuer)):
        child = endorser.find(f"{{{SLREQ}}}{local}")
        if child is None:
            child = _sub(endorser, f"{{{SLREQ}}}{local}")
        child.text = value
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")


def attach_signature(raw: bytes, armored: str) -> bytes:
    """The document with ``<sig:Signature>`` holding ``armored`` appended as the last child of rdf:RDF.

    Nothing else changes: the element declares its own namespace, and the whitespace before ``</rdf:RDF>``
    stays where it was, so removing the element with its tail gives back the signed bytes."""
    root = xml_root(raw)
    if signature_element(root) is not None:
        raise MetadataInvalid([Problem("already-signed", "The document is already signed.")])
    children = list(root)
    before = children[-1].tail if children else root.text
    signature = etree.SubElement(root, OPENPGP_SIGNATURE, nsmap={"sig": SIG})
    signature.text = "\n" + armored.strip() + "\n"
    signature.tail = "\n" if before is not None and before.endswith("\n") else None
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")


__all__ = [
    "ALGORITHMS",
    "NS",
    "Checksum",
    "Endorsement",
    "Metadata",
    "MetadataInvalid",
    "Problem",
    "attach_signature",
    "build",
    "build_for_file",
    "check",
    "endorse",
    "file_checksums",
    "format_date",
    "identifier_from_sha1",
    "parse",
    "parse_date",
    "rebuild",
    "sha1_from_identifier",
    "signature_element",
    "signed_bytes",
    "xml_root",
]
