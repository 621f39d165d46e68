"""Building entries, and the signed bytes and signature slot that signing works with."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lxml import etree

from alto_metadata.guard import xml_root
from alto_metadata.identity import detect_compression, file_checksums, identifier_from_sha1
from alto_metadata.vocabulary import (
    _ABOUT,
    _CHECKSUM,
    _DESCRIPTION,
    _ENDORSEMENT,
    _ENDORSER,
    _PARSE_TYPE,
    DCTERMS,
    DEFAULT_MAX_BYTES,
    NS,
    OPENPGP_SIGNATURE,
    RDF,
    SIG,
    SIGNATURE_ELEMENTS,
    SLREQ,
    SLTERMS,
    XML,
    XML_BASE,
    Metadata,
    MetadataInvalid,
    Problem,
    _text_children,
    format_date,
)

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


def signed_bytes(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes a signature covers: inclusive C14N (with comments) of rdf:RDF without the signature element
    and its tail text (DESIGN.md §2.2)."""
    root = xml_root(raw, max_bytes=max_bytes)
    signature = signature_element(root)
    if signature is not None:
        root.remove(signature)  # lxml removes the element's tail text with it
    return _canonical(root)


def endorse(
    raw: bytes, *, email: str, subject: str, issuer: str, created: datetime, max_bytes: int = DEFAULT_MAX_BYTES
) -> bytes:
    """The unsigned document with its endorsement filled in (the step before signing)."""
    root = xml_root(raw, max_bytes=max_bytes)
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


def redeclared(raw: bytes, *, deprecated: str | None, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """An unsigned copy of an entry, for its endorser to sign again as a newer entry: the signature removed and
    ``slterms:deprecated`` set to ``deprecated`` (or removed when None: un-deprecation); everything else, the
    endorser's tag, expiry and extension elements included, stays as it was. Signing refills the endorsement."""
    root = xml_root(raw, max_bytes=max_bytes)
    signature = signature_element(root)
    if signature is not None:
        root.remove(signature)
    description = root.find(_DESCRIPTION)
    if description is None:
        raise MetadataInvalid([Problem("missing:Description", "rdf:RDF must hold one rdf:Description; none found.")])
    for old in description.findall(f"{{{SLTERMS}}}deprecated"):
        previous = old.getprevious()
        if previous is not None:  # lxml removes the element's tail with it: the layout goes to its neighbour
            previous.tail = old.tail
        description.remove(old)
    if deprecated is not None:
        children = list(description)
        element = etree.SubElement(description, f"{{{SLTERMS}}}deprecated")
        element.text = deprecated
        if children:  # keep the layout: the new element indented like its siblings
            element.tail = children[-1].tail
            children[-1].tail = children[-2].tail if len(children) > 1 else description.text
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")


def attach_signature(raw: bytes, armored: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The document with ``<sig:Signature>`` holding ``armored`` appended as the last child of rdf:RDF.

    Nothing else changes: the element declares its own namespace, and the whitespace before ``</rdf:RDF>``
    stays where it was, so removing the element with its tail gives back the signed bytes."""
    root = xml_root(raw, max_bytes=max_bytes)
    if signature_element(root) is not None:
        raise MetadataInvalid([Problem("already-signed", "The document is already signed.")])
    children = list(root)
    before = children[-1].tail if children else root.text
    signature = etree.SubElement(root, OPENPGP_SIGNATURE, nsmap={"sig": SIG})
    signature.text = "\n" + armored.strip() + "\n"
    signature.tail = "\n" if before is not None and before.endswith("\n") else None
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")
