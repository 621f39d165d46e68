"""Extension elements (DESIGN.md §2.1): kept, but only in the RDF/XML forms of W3C RDF 1.1 XML Syntax §7.2.

A strict subset of the grammar, checked on the element tree:

- a *property element* (a child of rdf:Description, of a ``rdf:parseType="Resource"`` element, or of a node
  element) is one of: text (literalPropertyElt, §7.2.16; ``xml:lang`` and ``rdf:datatype`` allowed), exactly one
  node element (resourcePropertyElt, §7.2.15), ``rdf:parseType="Resource"`` holding property elements
  (§7.2.18), or empty with ``rdf:resource`` or ``rdf:nodeID`` (emptyPropertyElt, §7.2.21). Never text beside
  elements, never property attributes, no ``parseType="Literal"`` (raw markup) or ``"Collection"``;
- a *node element* (§7.2.11: the child of a resource property, or an extension directly in rdf:RDF) has at
  most one of ``rdf:about``, ``rdf:nodeID``, ``rdf:ID``, no property attributes, and only property elements;
- element names have a namespace and are not RDF syntax names (§7.2.2–7.2.5);
- elements in a markup namespace (XHTML, SVG, MathML) are at most text-only properties, and no literal has
  the datatype rdf:HTML or rdf:XMLLiteral, so no kept extension carries markup a browser would run.
"""

from __future__ import annotations

from lxml import etree

from alto_metadata.vocabulary import RDF, XML, XML_WHITESPACE

_CORE_SYNTAX_TERMS = frozenset({"RDF", "ID", "about", "parseType", "resource", "nodeID", "datatype"})
_OLD_TERMS = frozenset({"aboutEach", "aboutEachPrefix", "bagID"})
_NOT_PROPERTY = _CORE_SYNTAX_TERMS | _OLD_TERMS | {"Description"}  # propertyElementURIs, §7.2.5
_NOT_NODE = _CORE_SYNTAX_TERMS | _OLD_TERMS | {"li"}  # nodeElementURIs, §7.2.4
# Literal datatypes whose text is markup to its readers (RDF 1.1 Concepts §5.2); no extension carries markup.
_MARKUP_DATATYPES = frozenset({f"{RDF}HTML", f"{RDF}XMLLiteral"})
MARKUP_NAMESPACES = frozenset(
    {"http://www.w3.org/1999/xhtml", "http://www.w3.org/2000/svg", "http://www.w3.org/1998/Math/MathML"}
)

_LANG = f"{{{XML}}}lang"
_ABOUT = f"{{{RDF}}}about"
_ID = f"{{{RDF}}}ID"
_NODE_ID = f"{{{RDF}}}nodeID"
_RESOURCE = f"{{{RDF}}}resource"
_DATATYPE = f"{{{RDF}}}datatype"
_PARSE_TYPE = f"{{{RDF}}}parseType"
_PROPERTY_ATTRIBUTES = frozenset({_LANG, _DATATYPE, _PARSE_TYPE, _RESOURCE, _NODE_ID})
_NODE_ATTRIBUTES = frozenset({_LANG, _ABOUT, _ID, _NODE_ID})


class _Invalid(Exception):
    pass


def shown(element: etree._Element) -> str:
    """The element's name as the document writes it (``ex:note``), or in Clark notation without a prefix."""
    qname = etree.QName(element)
    if element.prefix:
        return f"{element.prefix}:{qname.localname}"
    return element.tag


def _attribute(element: etree._Element, name: str) -> str:
    qname = etree.QName(name)
    if qname.namespace == XML:
        return f"xml:{qname.localname}"
    if qname.namespace is None:
        return qname.localname
    prefix = next((p for p, uri in element.nsmap.items() if uri == qname.namespace and p), None)
    return f"{prefix}:{qname.localname}" if prefix else name


def _elements(element: etree._Element) -> list[etree._Element]:
    return [child for child in element if isinstance(child.tag, str)]


def _has_text(element: etree._Element) -> bool:
    """Whether non-whitespace text stands directly in ``element`` (beside its children, comments included)."""
    parts = [element.text or "", *(child.tail or "" for child in element)]
    return any(part.strip(XML_WHITESPACE) for part in parts)


def _check_name(element: etree._Element, forbidden_rdf: frozenset[str], what: str) -> None:
    qname = etree.QName(element)
    if qname.namespace is None:
        raise _Invalid(f"{shown(element)} has no namespace; RDF/XML names are namespace-qualified")
    if qname.namespace == RDF and qname.localname in forbidden_rdf:
        raise _Invalid(f"{shown(element)} is an RDF syntax name, not a {what}")


def _check_attributes(element: etree._Element, allowed: frozenset[str]) -> None:
    for name in element.attrib:
        if name not in allowed:
            raise _Invalid(
                f"{shown(element)} has the attribute {_attribute(element, name)}; property attributes and other "
                "attributes are not allowed here"
            )


def _check_node(element: etree._Element) -> None:
    _check_name(element, _NOT_NODE, "node element")
    if etree.QName(element).namespace in MARKUP_NAMESPACES:
        raise _Invalid(f"{shown(element)} is markup (XHTML, SVG or MathML), not an RDF node element")
    _check_attributes(element, _NODE_ATTRIBUTES)
    if sum(name in element.attrib for name in (_ABOUT, _ID, _NODE_ID)) > 1:
        raise _Invalid(f"{shown(element)} has more than one of rdf:about, rdf:ID, rdf:nodeID")
    if _has_text(element):
        raise _Invalid(f"{shown(element)} is a node element and may hold only property elements, not text")
    for child in _elements(element):
        _check_property(child)


def _check_property(element: etree._Element) -> None:
    _check_name(element, _NOT_PROPERTY, "property element")
    children = _elements(element)
    if etree.QName(element).namespace in MARKUP_NAMESPACES and children:
        raise _Invalid(f"{shown(element)} is markup (XHTML, SVG or MathML) holding elements; it may hold text only")
    _check_attributes(element, _PROPERTY_ATTRIBUTES)
    attrib = element.attrib
    if attrib.get(_DATATYPE) in _MARKUP_DATATYPES:
        raise _Invalid(f"{shown(element)} has the markup datatype {attrib[_DATATYPE]}; extensions hold no markup")
    parse_type = attrib.get(_PARSE_TYPE)
    if parse_type is not None:
        if parse_type != "Resource":
            raise _Invalid(f'{shown(element)} has rdf:parseType="{parse_type}"; only "Resource" is allowed')
        if any(name in attrib for name in (_RESOURCE, _NODE_ID, _DATATYPE)):
            raise _Invalid(f'{shown(element)} has rdf:parseType="Resource" beside rdf:resource, nodeID or datatype')
        if _has_text(element):
            raise _Invalid(f'{shown(element)} has rdf:parseType="Resource" and may hold property elements only')
        for child in children:
            _check_property(child)
    elif _RESOURCE in attrib or _NODE_ID in attrib:
        if _RESOURCE in attrib and _NODE_ID in attrib:
            raise _Invalid(f"{shown(element)} has both rdf:resource and rdf:nodeID")
        if _DATATYPE in attrib:
            raise _Invalid(f"{shown(element)} has rdf:datatype beside rdf:resource or rdf:nodeID")
        if len(element) or element.text:
            raise _Invalid(f"{shown(element)} refers to a resource and must be empty")
    elif children:
        if len(children) > 1:
            raise _Invalid(
                f"{shown(element)} holds {len(children)} elements; a property holds text or exactly one node element"
            )
        if _has_text(element):
            raise _Invalid(f"{shown(element)} holds both text and elements")
        if _DATATYPE in attrib:
            raise _Invalid(f"{shown(element)} has rdf:datatype but holds an element, not text")
        _check_node(children[0])


def property_problem(element: etree._Element) -> str | None:
    """Why ``element`` is not an allowed RDF/XML property element (the first reason found), or None."""
    try:
        _check_property(element)
    except _Invalid as invalid:
        return str(invalid)
    return None


def node_problem(element: etree._Element) -> str | None:
    """Why ``element`` is not an allowed RDF/XML node element (the first reason found), or None."""
    try:
        _check_node(element)
    except _Invalid as invalid:
        return str(invalid)
    return None
