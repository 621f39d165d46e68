"""Hostile-input guard: every read of entry XML starts here, before lxml does real work. It also refuses what
no signature would cover: bytes outside rdf:RDF other than the XML declaration and whitespace, and any
encoding but UTF-8 (DESIGN.md §2.2)."""

from __future__ import annotations

from lxml import etree

from alto_metadata.vocabulary import DEFAULT_MAX_BYTES, MAX_DEPTH, XINCLUDE, MetadataInvalid, Problem

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


# UTF-16 and UTF-32 byte-order marks, and the first character "<" in those encodings without one.
_WIDE_STARTS = (
    b"\x00\x00\xfe\xff",
    b"\xff\xfe\x00\x00",
    b"\xfe\xff",
    b"\xff\xfe",
    b"\x00\x00\x00<",
    b"<\x00\x00\x00",
    b"\x00<",
    b"<\x00",
)
_UTF8_BOM = b"\xef\xbb\xbf"


def _check_encoding(raw: bytes) -> None:
    """Refuse anything but UTF-8 without a byte-order mark: the stored bytes must be the text that was signed
    (C14N is UTF-8) and that every reader decodes (DESIGN.md §2.2)."""
    if raw.startswith(_WIDE_STARTS):
        raise _Refused("encoding", "The document is UTF-16 or UTF-32; entries are UTF-8 (without a byte-order mark).")
    if raw.startswith(_UTF8_BOM):
        raise _Refused(
            "outside-root",
            "The document starts with a byte-order mark; nothing but the XML declaration and whitespace may stand "
            "outside rdf:RDF.",
        )
    if b"\x00" in raw:
        raise _Refused("not-xml", "The document is not XML text: it contains NUL bytes (binary data or UTF-16/32).")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Refused(
            "encoding", f"The document is not UTF-8: byte {exc.start} ({raw[exc.start]:#04x}) is not valid UTF-8."
        ) from None


def _check_outside_root(root: etree._Element) -> None:
    """Refuse a declared encoding other than UTF-8, and comments or processing instructions around rdf:RDF:
    no signature covers them (DESIGN.md §2.2)."""
    declared = root.getroottree().docinfo.encoding or "UTF-8"
    if declared.upper() != "UTF-8":
        raise _Refused("encoding", f"The XML declaration names the encoding {declared!r}; entries are UTF-8.")
    before = next(root.itersiblings(preceding=True), None)
    after = next(root.itersiblings(), None)
    for node, where in ((before, "before"), (after, "after")):
        if node is not None:
            kind = "a comment" if isinstance(node, etree._Comment) else "a processing instruction"
            raise _Refused(
                "outside-root",
                f"The document has {kind} {where} rdf:RDF; nothing but the XML declaration and whitespace may "
                "stand outside rdf:RDF, where no signature covers it.",
            )


def _scan_prolog(raw: bytes) -> None:
    """Refuse a document type declaration by looking only at the prolog, before lxml parses anything."""
    i = 0
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


def _guarded_root(raw: bytes, max_bytes: int) -> etree._Element:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError("entry documents are bytes")
    raw = bytes(raw)
    limit = max_bytes
    if len(raw) > limit:
        raise _Refused("too-large", f"The document is {len(raw)} bytes; entries may be at most {limit} bytes.")
    if not raw.strip():
        raise _Refused("not-xml", "The document is empty.")
    _check_encoding(raw)
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
        if type_name == "ERR_DOCUMENT_END":
            raise _Refused(
                "outside-root",
                f"The document has content after rdf:RDF; nothing but the XML declaration and whitespace may stand "
                f"outside rdf:RDF: {exc}",
            ) from None
        raise _Refused("not-xml", f"The document is not well-formed XML: {exc}") from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None or tree.docinfo.externalDTD is not None:
        raise _Refused("dtd-forbidden", "The document has a document type declaration; DTDs are not allowed.")
    _check_outside_root(root)
    if _depth_exceeds(root, MAX_DEPTH):
        raise _Refused("too-deep", f"The document nests elements more than {MAX_DEPTH} levels deep.")
    for node in root.iter():
        if isinstance(node, etree._Entity):
            raise _Refused("entity-forbidden", f"The document refers to the XML entity {node.text}.")
        if isinstance(node.tag, str) and etree.QName(node).namespace in XINCLUDE:
            raise _Refused("external-reference", "The document uses XInclude; external references are not allowed.")
    return root


def xml_root(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> etree._Element:
    """The document's root element, parsed safely; raises :class:`MetadataInvalid` on hostile input.

    ``max_bytes`` is the size limit (the server passes its ``MARKETPLACE_MAX_ENTRY_BYTES``)."""
    try:
        return _guarded_root(raw, max_bytes)
    except _Refused as refused:
        raise MetadataInvalid([refused.problem]) from None
