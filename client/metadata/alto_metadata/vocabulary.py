"""The entry format's vocabulary: namespaces, limits, problems, the parsed entry and its dates."""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

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
XML_WHITESPACE = " \t\r\n"  # XML's whitespace; str.strip() without it would also strip e.g. U+00A0
DEFAULT_MAX_BYTES = 1024 * 1024
# StratusLab entries are five levels deep; anything far deeper is an attack, not metadata.
MAX_DEPTH = 32

# The signature elements a document may end with, and the kind each denotes (DESIGN.md §2.2).
SIGNATURE_ELEMENTS = {f"{{{SIG}}}Signature": "openpgp", f"{{{DSIG}}}Signature": "xmldsig"}
OPENPGP_SIGNATURE = f"{{{SIG}}}Signature"
# The OpenPGP signature notation that binds a signature to its entry key (identifier, e-mail, created), so that
# a signature copied onto another entry is recognised as such rather than reported as a bare "bad signature".
NOTATION = "entry@altostratus.dev"

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
_ISSUER_RE = re.compile(r"OpenPGP:[0-9A-Fa-f]{40}")
# An endorser e-mail (slreq:email): an RFC 5322 dot-atom or quoted local part, then a host name of LDH labels
# (internationalised names as their IDNA form) with a top-level label of two or more characters, "localhost"
# (a site's key may carry e.g. altostratus@localhost), or an address literal in brackets.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_RE = re.compile(rf'{_ATEXT}(?:\.{_ATEXT})*|"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


# ---------------------------------------------------------------------------------------------------------------
# Problems


@dataclass(frozen=True)
class Problem:
    """One broken rule: ``rule`` is the stable name, ``message`` a sentence naming the element and value."""

    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


class MetadataInvalid(ValueError):
    """The document breaks one or more rules of DESIGN.md §2.1; ``problems`` lists every one found.

    ``code`` is the first problem's rule and ``message`` its sentence (with how many more there are)."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        if not self.problems:
            raise ValueError("MetadataInvalid needs at least one problem")
        first = self.problems[0]
        message = first.message
        if len(self.problems) > 1:
            message = f"{message} (and {len(self.problems) - 1} more problem(s))"
        super().__init__(message)
        self.message = message
        self.code = first.rule


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


def is_email_address(value: str) -> bool:
    """Whether ``value`` is an e-mail address as ``slreq:email`` must be (the ``email-format`` rule)."""
    local, at, domain = value.rpartition("@")
    if not at or not local or len(value) > 254 or not _LOCAL_RE.fullmatch(local):
        return False
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        try:
            ipaddress.ip_address(literal[5:] if literal.startswith("IPv6:") else literal)
        except ValueError:
            return False
        return True
    try:
        host = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    if host.lower() == "localhost":
        return True
    labels = host.split(".")
    return (
        len(labels) >= 2
        and all(_LABEL_RE.fullmatch(label) for label in labels)
        and len(labels[-1]) >= 2
        and not labels[-1].isdigit()
    )


def notation_value(identifier: str, email: str, created: datetime) -> str:
    """What :data:`NOTATION` says for the entry key (identifier, endorser e-mail, created)."""
    return f"{identifier}/{email.lower()}/{format_date(created)}"


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
