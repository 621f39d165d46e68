"""How an entry's original signed bytes are handed out, the same by the entry page and the API, one at a time or
as pages of entries (what another Marketplace imports: ``manage.py import_entries URL``)."""

from __future__ import annotations

import base64
from collections.abc import Iterable

from lxml import etree

# A page of entries: <entries xmlns=PAGE_NS next="URL of the next page"><entry href="URL">base64 of the signed
# bytes</entry>…</entries>. Base64 keeps each document's bytes exactly as they were signed and stored.
PAGE_NS = "http://altostratus.dev/ns/entries#"


def signed_download_headers(identifier: str, created: str) -> dict[str, str]:
    """Headers for an entry's signed bytes: a file to save, never a document the browser renders or runs.
    An entry may carry any extension element, XHTML ``script`` included, and browsers run that in XML."""
    return {
        "Content-Disposition": f'attachment; filename="{identifier}-{created.replace(":", "")}.xml"',
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "X-Content-Type-Options": "nosniff",
    }


def entries_page_xml(entries: Iterable[tuple[str, bytes]], *, next_link: str | None) -> bytes:
    """A page of entries as XML: each (its URL, its signed bytes), and the next page's URL when there is one."""
    root = etree.Element(f"{{{PAGE_NS}}}entries", nsmap={None: PAGE_NS})
    if next_link:
        root.set("next", next_link)
    for url, raw in entries:
        element = etree.SubElement(root, f"{{{PAGE_NS}}}entry", href=url)
        element.text = base64.b64encode(raw).decode("ascii")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


PAGE_HEADERS = {"Content-Security-Policy": "sandbox; default-src 'none'", "X-Content-Type-Options": "nosniff"}
