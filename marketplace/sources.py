"""Where bulk-imported entries come from (``manage.py import_entries``): a directory or a tar archive of signed
documents, or another Altostratus Marketplace's API, read page by page (``GET /api/v1/marketplace/entries/
?format=xml``). The only Marketplace module that talks to other servers (httpx).

Another server is a stranger: only http(s), redirects only within the origin the import started from and at most
``MAX_REDIRECTS`` of them, ``next`` links only within that origin too and never twice, every read under a timeout
and each page under a deadline, no page beyond ``Limits.page_bytes`` (refused as it arrives, not after), no
document beyond ``MARKETPLACE_MAX_ENTRY_BYTES``, pages parsed without DTDs, entities or network access, and the
environment's proxies ignored unless asked for (the rules of ``storage.downloads``). A document that breaks a
rule is reported with the rule's name and the import goes on; a source that breaks one (an unreachable server, a
page that is not a page) ends it with :class:`SourceError`.
"""

from __future__ import annotations

import base64
import binascii
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
from django.conf import settings
from lxml import etree

from core.errors import PermanentError
from marketplace.downloads import PAGE_NS

MAX_REDIRECTS = 5
WEB_SCHEMES = ("http", "https")


class SourceError(PermanentError):
    """The source as a whole cannot be read: ``code`` names the rule, the message says where."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Document:
    """One document of a source: its bytes, or the rule it broke (``problem``: (rule, message))."""

    name: str
    raw: bytes = b""
    problem: tuple[str, str] | None = None


@dataclass(frozen=True)
class Limits:
    """Bounds on what another server may send: per page, per read and per page's whole transfer."""

    page_bytes: int = 64 * 1024 * 1024
    io_timeout: float = 30.0
    page_deadline: float = 300.0
    trust_env: bool = False


def _entry_limit() -> int:
    return int(getattr(settings, "MARKETPLACE_MAX_ENTRY_BYTES", 1024 * 1024))


def is_url(source: str) -> bool:
    return urlsplit(source).scheme.lower() in WEB_SCHEMES


# --- Files -----------------------------------------------------------------------------------------------------


def directory_documents(path: Path) -> Iterator[Document]:
    """Every ``*.xml`` regular file under ``path`` (recursively, by name); links and oversized files refused."""
    limit = _entry_limit()
    for file in sorted(path.rglob("*.xml")):
        name = str(file.relative_to(path))
        if file.is_symlink() or not file.is_file():
            yield Document(name, problem=("not-a-file", f"{name} is not a regular file."))
            continue
        with file.open("rb") as handle:
            raw = handle.read(limit + 1)
        yield _bounded(name, raw, limit)


def tar_documents(path: Path) -> Iterator[Document]:
    """Every ``*.xml`` regular member of a tar archive (plain, gz, bz2 or xz), read in memory and never extracted
    (member names cannot reach the file system); links, devices and oversized members refused."""
    limit = _entry_limit()
    try:
        archive = tarfile.open(path, "r:*")  # noqa: SIM115 - closed below, members are read as they come
    except (tarfile.TarError, OSError) as exc:
        raise SourceError("source-unreadable", f"{path} is not a readable tar archive: {exc}") from None
    with archive:
        try:
            for member in archive:
                if member.isdir() or not member.name.endswith(".xml"):
                    continue
                if not member.isfile():
                    yield Document(member.name, problem=("not-a-file", f"{member.name} is not a regular file."))
                    continue
                if member.size > limit:
                    yield Document(member.name, problem=("too-large", _too_large(member.name, limit)))
                    continue
                handle = archive.extractfile(member)
                yield _bounded(member.name, handle.read(limit + 1) if handle else b"", limit)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise SourceError("source-unreadable", f"{path}: the archive is damaged: {exc}") from None


def _too_large(name: str, limit: int) -> str:
    return f"{name} is larger than {limit} bytes (MARKETPLACE_MAX_ENTRY_BYTES)."


def _bounded(name: str, raw: bytes, limit: int) -> Document:
    return Document(name, problem=("too-large", _too_large(name, limit))) if len(raw) > limit else Document(name, raw)


# --- Another Marketplace ------------------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def _same_origin(start: str, url: str, what: str) -> str:
    if urlsplit(url).scheme.lower() not in WEB_SCHEMES or _origin(url) != _origin(start):
        raise SourceError("origin-refused", f"The {what} {url!r} leaves the server the import started from ({start}).")
    return url


def _page_url(url: str, page_size: int) -> str:
    """The first page's URL: the entries API of the server ``url`` names, in the XML page form."""
    parts = urlsplit(url)
    path = parts.path if parts.path.rstrip("/").endswith("/marketplace/entries") else "/api/v1/marketplace/entries/"
    return parts._replace(path=path, query=f"format=xml&page_size={page_size}", fragment="").geturl()


def api_documents(url: str, *, limits: Limits | None = None, page_size: int = 100) -> Iterator[Document]:
    """Every entry another Marketplace serves, oldest first (its pages are in upload order, so that each
    timeline arrives in order), following its ``next`` links."""
    limits = limits or Limits()
    if not is_url(url) or not urlsplit(url).hostname:
        raise SourceError("scheme-refused", f"{url!r} is not an http(s) URL.")
    current: str | None = _page_url(url, page_size)
    seen: set[str] = set()
    headers = {"Accept": "application/xml", "Accept-Encoding": "identity", "User-Agent": "altostratus-import"}
    with httpx.Client(
        timeout=httpx.Timeout(limits.io_timeout), follow_redirects=False, trust_env=limits.trust_env
    ) as client:
        while current is not None:
            if current in seen:
                raise SourceError("page-loop", f"The server sent the page {current} twice.")
            seen.add(current)
            body = _fetch_page(client, url, current, headers, limits)
            documents, following = _read_page(current, body)
            yield from documents
            current = _same_origin(url, urljoin(current, following), "next page") if following else None


def _fetch_page(client: httpx.Client, start: str, url: str, headers: dict[str, str], limits: Limits) -> bytes:
    deadline = time.monotonic() + limits.page_deadline
    target = url
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            with client.stream("GET", target, headers=headers) as response:
                if response.is_redirect:
                    location = urljoin(target, response.headers.get("location", ""))
                    target = _same_origin(start, location, "redirect")
                    continue
                if response.status_code != 200:
                    raise SourceError("unreachable", f"{target}: the server answered HTTP {response.status_code}.")
                media = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if media not in ("application/xml", "text/xml"):
                    raise SourceError("page-malformed", f"{target}: the server sent {media or 'no type'}, not XML.")
                announced = response.headers.get("content-length", "")
                if announced.isdigit() and int(announced) > limits.page_bytes:
                    raise SourceError("too-large", f"{target}: the server announces a {announced}-byte page.")
                chunks, size = [], 0
                for chunk in response.iter_raw():
                    size += len(chunk)
                    if size > limits.page_bytes:
                        raise SourceError("too-large", f"{target}: the page is larger than {limits.page_bytes} bytes.")
                    if time.monotonic() > deadline:
                        raise SourceError("timeout", f"{target}: the page took longer than {limits.page_deadline:g} s.")
                    chunks.append(chunk)
                return b"".join(chunks)
        raise SourceError("redirect-refused", f"{url}: more than {MAX_REDIRECTS} redirects.")
    except httpx.TimeoutException:
        raise SourceError("timeout", f"{target}: no answer within {limits.io_timeout:g} s.") from None
    except httpx.HTTPError as exc:
        raise SourceError("unreachable", f"{target}: {type(exc).__name__}: {exc}") from None


def _parser() -> etree.XMLParser:
    # As for entries (DESIGN §2.3): no DTDs, no entities, no network, libxml2's size and depth limits kept.
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False
    )


def _read_page(url: str, body: bytes) -> tuple[list[Document], str | None]:
    """The documents of one page and its ``next`` link. A page that is not one ends the import; a document
    that is not base64 or too large is refused alone."""
    try:
        root = etree.fromstring(body, _parser())
    except etree.XMLSyntaxError as exc:
        raise SourceError("page-malformed", f"{url}: not a well-formed page: {exc}") from None
    if root.tag != f"{{{PAGE_NS}}}entries" or any(isinstance(node, etree._Entity) for node in root.iter()):
        raise SourceError("page-malformed", f"{url}: not a page of Marketplace entries.")
    limit = _entry_limit()
    documents = []
    for n, element in enumerate(root.iterchildren(f"{{{PAGE_NS}}}entry")):
        name = element.get("href") or f"{url}#{n}"
        text = (element.text or "").strip()
        if len(text) > (limit + 2) // 3 * 4 + 4:
            documents.append(Document(name, problem=("too-large", _too_large(name, limit))))
            continue
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            documents.append(Document(name, problem=("page-malformed", f"{name}: the document is not base64.")))
            continue
        documents.append(_bounded(name, raw, limit))
    return documents, root.get("next") or None


# --- Any web server (HEPiX image lists and the images they name) -------------------------------------------


def web_stream(url: str, *, max_bytes: int, limits: Limits | None = None, what: str = "document") -> Iterator[bytes]:
    """The body of ``url`` chunk by chunk, as it arrives: redirects followed only to http(s) URLs and at most
    ``MAX_REDIRECTS`` of them, refused (``too-large``) as soon as it passes ``max_bytes`` or announces more, and
    ending (``timeout``) when one read or the whole transfer takes longer than the limits allow. Raises
    :class:`SourceError`; the caller stops reading whenever it likes (the connection is closed)."""
    limits = limits or Limits()
    if not is_url(url) or not urlsplit(url).hostname:
        raise SourceError("scheme-refused", f"The {what} URL {url!r} is not an http(s) URL.")
    deadline = time.monotonic() + limits.page_deadline
    headers = {"Accept-Encoding": "identity", "User-Agent": "altostratus-imagelist"}
    target = url
    try:
        with httpx.Client(
            timeout=httpx.Timeout(limits.io_timeout), follow_redirects=False, trust_env=limits.trust_env
        ) as client:
            for _hop in range(MAX_REDIRECTS + 1):
                with client.stream("GET", target, headers=headers) as response:
                    if response.is_redirect:
                        location = urljoin(target, response.headers.get("location", ""))
                        if not is_url(location):
                            raise SourceError("redirect-refused", f"{target} redirects to {location!r}, not http(s).")
                        target = location
                        continue
                    if response.status_code != 200:
                        raise SourceError("unreachable", f"{target}: the server answered HTTP {response.status_code}.")
                    announced = response.headers.get("content-length", "")
                    if announced.isdigit() and int(announced) > max_bytes:
                        raise SourceError(
                            "too-large", f"{target}: the server announces {announced} bytes, more than {max_bytes}."
                        )
                    size = 0
                    for chunk in response.iter_raw():
                        size += len(chunk)
                        if size > max_bytes:
                            raise SourceError("too-large", f"{target}: the {what} is larger than {max_bytes} bytes.")
                        if time.monotonic() > deadline:
                            raise SourceError(
                                "timeout", f"{target}: the {what} took longer than {limits.page_deadline:g} s."
                            )
                        yield chunk
                    return
            raise SourceError("redirect-refused", f"{url}: more than {MAX_REDIRECTS} redirects.")
    except httpx.TimeoutException:
        raise SourceError("timeout", f"{target}: no answer within {limits.io_timeout:g} s.") from None
    except httpx.HTTPError as exc:
        raise SourceError("unreachable", f"{target}: {type(exc).__name__}: {exc}") from None


def web_fetch(url: str, *, max_bytes: int, limits: Limits | None = None, what: str = "document") -> bytes:
    """The whole body of ``url``, under the rules of :func:`web_stream`."""
    return b"".join(web_stream(url, max_bytes=max_bytes, limits=limits, what=what))


def file_fetch(path: Path, *, max_bytes: int, what: str = "document") -> bytes:
    """A regular file's bytes, refused (``too-large``) past ``max_bytes`` without reading further."""
    if not path.is_file():
        raise SourceError("not-a-file", f"{path} is not a regular file.")
    with path.open("rb") as handle:
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise SourceError("too-large", f"The {what} {path} is larger than {max_bytes} bytes.")
    return raw
