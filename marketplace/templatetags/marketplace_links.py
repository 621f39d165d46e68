"""Template filters for what endorsers wrote: their download locations are links only when they are web addresses."""

from __future__ import annotations

from urllib.parse import urlsplit

from django import template
from django.utils.html import format_html

register = template.Library()

LINK_SCHEMES = ("http", "https")


@register.filter
def location_link(url: str) -> str:
    """An http(s) location as a link; anything else (``file:``, ``javascript:``, …) as plain text, escaped.

    Rows stored before the reader refused other schemes may hold them, and a signed entry is never rewritten."""
    text = str(url)
    try:
        scheme = urlsplit(text.strip()).scheme.lower()
    except ValueError:
        scheme = ""
    # Browsers drop control characters and whitespace inside a scheme ("java\tscript:"); urlsplit does not,
    # so only a value that is exactly an http(s) address with a host becomes a link.
    if scheme in LINK_SCHEMES and text == text.strip() and text.isprintable() and urlsplit(text).netloc:
        return format_html('<a href="{}" rel="nofollow noopener noreferrer">{}</a>', text, text)
    return format_html('<span class="location">{}</span>', text)
