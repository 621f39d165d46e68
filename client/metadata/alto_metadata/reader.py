"""Reading and validating an entry, every rule of DESIGN.md §2.1 by name."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from lxml import etree

from alto_metadata.extensions import node_problem, property_problem, shown
from alto_metadata.guard import _guarded_root, _Refused
from alto_metadata.identity import identifier_from_sha1, is_identifier
from alto_metadata.locations import allowed_file_dirs, location_problem
from alto_metadata.vocabulary import (
    _ABOUT,
    _CHECKSUM,
    _DESCRIPTION,
    _ENDORSEMENT,
    _ENDORSER,
    _HEX_RE,
    _ISSUER_RE,
    _MULTI,
    _PARSE_TYPE,
    _RDF_ROOT,
    _SINGLE,
    _STRICT_NAMESPACES,
    ALGORITHMS,
    COMPRESSIONS,
    DCTERMS,
    DEFAULT_MAX_BYTES,
    DISKS_BUSES,
    FORMATS,
    KINDS,
    RDF,
    SIGNATURE_ELEMENTS,
    SLREQ,
    SLTERMS,
    XML,
    XML_BASE,
    XML_WHITESPACE,
    Checksum,
    Endorsement,
    Metadata,
    MetadataInvalid,
    Problem,
    _name,
    _text_children,
    is_email_address,
    parse_date,
)


class _Reader:
    """Reads one document, collecting every problem rather than stopping at the first."""

    def __init__(self, root: etree._Element, file_dirs: tuple[str, ...]) -> None:
        self.root = root
        self.file_dirs = file_dirs
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
                self.extension(child, parent, property_problem(child), "property")
        return found

    def extension(self, element: etree._Element, parent: etree._Element, problem: str | None, form: str) -> None:
        """Keep an element of another namespace, or report why it is not valid RDF/XML (``extension-invalid``)."""
        if problem is not None:
            self.problem(
                "extension-invalid",
                f"The extension element {shown(element)} in {_name(parent.tag)} is not an RDF/XML {form} element "
                f"as entries allow: {problem}.",
            )
        self.extensions.append((element.tag, "".join(element.itertext()).strip()))

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
                self.extension(child, root, node_problem(child), "node")
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
        signature = signatures[-1]
        # The signature's tail text is removed with it before C14N (DESIGN.md §2.2), so nothing signs it.
        if (signature.tail or "").strip(XML_WHITESPACE) or any(
            not isinstance(node.tag, str) for node in signature.itersiblings()
        ):
            self.problem(
                "after-signature",
                f"Text, a comment or a processing instruction follows {_name(signature.tag)}; only whitespace may "
                "follow the signature element, as no signature covers what does.",
            )
        return SIGNATURE_ELEMENTS[signature.tag]

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
            problem = location_problem(value, self.file_dirs)
            if problem is not None:
                self.problems.append(problem)
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
        if email is not None and not is_email_address(email):
            self.problem("email-format", f"slreq:email is {email!r}; it must be an e-mail address.")
        if issuer and issuer.startswith("OpenPGP:") and not _ISSUER_RE.fullmatch(issuer):
            self.problem(
                "issuer-format", f"slreq:issuer is {issuer!r}; OpenPGP issuers are OpenPGP:<40-hex fingerprint>."
            )
        if created is None or email is None or subject is None or issuer is None:
            return None
        return Endorsement(email=email.lower(), subject=subject, issuer=issuer, created=created)


def check(
    raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, file_location_dirs: Iterable[str] = ()
) -> tuple[Metadata | None, list[Problem]]:
    """Every problem of the document (empty when valid) and, when valid, its :class:`Metadata`.

    ``max_bytes`` is the size limit; ``file_location_dirs`` are the absolute directories file: locations may
    point into (none by default: a file: location is valid only on a site that names its directory)."""
    try:
        root = _guarded_root(raw, max_bytes)
    except _Refused as refused:
        return None, [refused.problem]
    reader = _Reader(root, allowed_file_dirs(file_location_dirs))
    fields = reader.read()
    if reader.problems or fields is None:
        return None, reader.problems
    metadata = Metadata(**fields, warnings=tuple(reader.warnings), extensions=tuple(reader.extensions))
    return metadata, []


def parse(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, file_location_dirs: Iterable[str] = ()) -> Metadata:
    """The entry's :class:`Metadata`; raises :class:`MetadataInvalid` listing every broken rule.

    The keyword arguments are those of :func:`check`."""
    metadata, problems = check(raw, max_bytes=max_bytes, file_location_dirs=file_location_dirs)
    if problems or metadata is None:
        raise MetadataInvalid(problems)
    return metadata
