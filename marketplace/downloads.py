"""How an entry's original signed bytes are handed out, the same by the entry page and the API."""

from __future__ import annotations


def signed_download_headers(identifier: str, created: str) -> dict[str, str]:
    """Headers for an entry's signed bytes: a file to save, never a document the browser renders or runs.
    An entry may carry any extension element, XHTML ``script`` included, and browsers run that in XML."""
    return {
        "Content-Disposition": f'attachment; filename="{identifier}-{created.replace(":", "")}.xml"',
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "X-Content-Type-Options": "nosniff",
    }
