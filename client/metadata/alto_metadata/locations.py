"""Where an image may be downloaded from (``slterms:location``): http and https anywhere, file: only under
the directories the site names."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from alto_metadata.vocabulary import Problem

WEB_SCHEMES = ("http", "https")
# An absolute URI's scheme, then printable ASCII without spaces (RFC 3986 characters; others percent-encoded).
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_PRINTABLE_RE = re.compile(r"[!-~]+")


def allowed_file_dirs(dirs: Iterable[str]) -> tuple[str, ...]:
    """``dirs`` (the directories a site lets file: locations point into) as normalised absolute paths."""
    relative = [str(d) for d in dirs if not posixpath.isabs(str(d))]
    if relative:
        raise ValueError(f"file: location directories must be absolute paths, not {relative}")
    return tuple(posixpath.normpath(str(d)) for d in dirs)


def location_problem(url: str, dirs: tuple[str, ...]) -> Problem | None:
    """Why ``url`` may not be an image's location (``location-format``, ``location-scheme``,
    ``location-not-allowed``), or None.

    ``dirs`` are normalised absolute directories (:func:`allowed_file_dirs`). A file: URL must name no host,
    have no query or fragment, no ``.`` or ``..`` segment (even one that stays inside: a symbolic link would
    make the operating system resolve it elsewhere), and lie strictly under one of ``dirs``. Symbolic links
    inside those directories are the site's own business."""
    if not _PRINTABLE_RE.fullmatch(url):
        return Problem(
            "location-format",
            f"slterms:location is {url!r}; it must be an absolute URL (no spaces; percent-encode other characters).",
        )
    scheme_match = _SCHEME_RE.match(url)
    scheme = scheme_match.group(1).lower() if scheme_match else ""
    if scheme not in (*WEB_SCHEMES, "file"):
        given = f"the scheme {scheme!r}" if scheme else "no scheme (a relative URL)"
        return Problem(
            "location-scheme",
            f"slterms:location {url!r} has {given}; locations are http or https URLs, or file: URLs under a "
            "directory this site allows.",
        )
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
    except ValueError as exc:
        return Problem("location-not-allowed", f"slterms:location {url!r} is not a valid URL: {exc}.")
    if scheme in WEB_SCHEMES:
        if not hostname:
            return Problem("location-not-allowed", f"slterms:location {url!r} has no host.")
        return None
    return _file_problem(url, parts.netloc, parts.path, bool(parts.query or parts.fragment), dirs)


def _file_problem(url: str, netloc: str, quoted_path: str, has_query: bool, dirs: tuple[str, ...]) -> Problem | None:
    def refused(why: str) -> Problem:
        return Problem("location-not-allowed", f"slterms:location {url!r} {why}.")

    if netloc:
        return refused(f"names the host {netloc!r}; file: locations name a local path (file:///…)")
    if has_query:
        return refused("has a query or fragment; file: locations are plain paths")
    path = unquote(quoted_path)
    if "\x00" in path or not path.startswith("/"):
        return refused("is not an absolute local path without NUL characters")
    if any(segment in (".", "..") for segment in path.split("/")):
        return refused("has a . or .. segment; file: locations must name the file directly")
    if not dirs:
        return refused("is a file: location, and this site allows none (MARKETPLACE_FILE_LOCATION_DIRS is empty)")
    if path.endswith("/"):
        return refused("names a directory, not an image file")
    if not any(path.startswith(directory.rstrip("/") + "/") for directory in dirs):
        return refused("is not under a directory this site allows for file: locations (MARKETPLACE_FILE_LOCATION_DIRS)")
    return None
