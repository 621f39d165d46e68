"""The image download adapter: fetch one location (http, https, or file: under the allowed directories) into a
file, decompressing and hashing on the fly, and keep it only when size and checksums equal what is expected.

The only module that talks to image servers (httpx). Servers are treated as hostile: no more than the expected
size is ever written (nor read, compressed, beyond a bound), every read has a timeout and the whole download a
deadline, redirects are followed only to http(s), and the environment's proxies are ignored unless the site says
otherwise. Each failure is a :class:`DownloadError` naming the location and the check; transient ones (timeouts,
unreachable servers, 5xx) are :class:`DownloadTransient`, the rest :class:`DownloadPermanent`. A failed download
leaves no file behind.
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import os
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from core.errors import PermanentError, TransientError
from marketplace.metadata.locations import WEB_SCHEMES, allowed_file_dirs, location_problem

CHUNK_BYTES = 1024 * 1024
MAX_REDIRECTS = 5
COMPRESSIONS = ("", "gz", "bz2", "xz")


class DownloadError(Exception):
    """One location failed one check: ``code`` (``size-mismatch``, ``sha1-mismatch``, ``sha256-mismatch``,
    ``too-large``, ``redirect-refused``, ``timeout``, ``location-not-allowed``, ``unreachable``,
    ``decompress-failed``), ``location`` and a sentence."""

    def __init__(self, code: str, location: str, detail: str) -> None:
        super().__init__(f"{location}: {code}: {detail}")
        self.code = code
        self.location = location
        self.detail = detail


class DownloadTransient(DownloadError, TransientError):
    """Asking again later may help: timed out, unreachable, a server error."""


class DownloadPermanent(DownloadError, PermanentError):
    """Asking again will not help: the bytes are wrong, the location is refused or not there."""


@dataclass(frozen=True)
class Expected:
    """What the image is (fixed by the Marketplace): its uncompressed size, SHA-1 and, when known, SHA-256."""

    bytes: int
    sha1: str
    sha256: str = ""


@dataclass(frozen=True)
class Limits:
    """How long a download may take in all (``deadline`` seconds), and per connect or read (``io_timeout``)."""

    deadline: float
    io_timeout: float
    trust_env: bool = False


@dataclass(frozen=True)
class Downloaded:
    """The verified file and what it was checked to be."""

    path: Path
    bytes: int
    sha1: str
    sha256: str


def compressed_bound(size: int) -> int:
    """The most compressed bytes accepted for ``size`` uncompressed ones: compressors add a little to data that
    does not compress (gzip: 5 bytes per 16 KiB block, bzip2 and xz about as much), plus headers."""
    return size + size // 100 + 64 * 1024


def fetch(
    *, url: str, compression: str, expected: Expected, target: Path, limits: Limits, file_dirs: tuple[str, ...] | None
) -> Downloaded:
    """Download ``url`` into ``target`` (uncompressed), checked against ``expected``.

    Writes a temporary file next to ``target`` and renames it to ``target`` only when every check passed;
    on any failure the temporary file is removed and a :class:`DownloadError` raised. ``file_dirs``: the
    directories file: locations may point into (None: ``MARKETPLACE_FILE_LOCATION_DIRS``)."""
    problem = location_problem(url, allowed_file_dirs(file_dirs))
    if problem is not None:
        raise DownloadPermanent("location-not-allowed", url, problem.message)
    if compression not in COMPRESSIONS:
        raise DownloadPermanent("decompress-failed", url, f"the compression {compression!r} is not gz, bz2 or xz")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept or removed below, never left behind
        dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False
    )
    temporary = Path(handle.name)
    try:
        with handle:
            sink = _Sink(url, expected, compression, handle)
            deadline = time.monotonic() + limits.deadline
            if urlsplit(url).scheme.lower() in WEB_SCHEMES:
                _fetch_web(url, sink, limits, deadline)
            else:
                _fetch_file(url, sink, deadline)
            result = sink.finish()
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return Downloaded(target, result.bytes, result.sha1, result.sha256)


# --- sources ---------------------------------------------------------------------------------------------


def _fetch_web(url: str, sink: _Sink, limits: Limits, deadline: float) -> None:
    timeout = httpx.Timeout(limits.io_timeout)
    headers = {"Accept-Encoding": "identity", "User-Agent": "altostratus-image-cache"}
    current = url
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=limits.trust_env) as client:
            for _hop in range(MAX_REDIRECTS + 1):
                with client.stream("GET", current, headers=headers) as response:
                    if response.is_redirect:
                        current = _redirect_target(url, current, response.headers.get("location", ""))
                        continue
                    _check_status(url, response.status_code)
                    sink.check_announced(response.headers.get("content-length", ""))
                    for chunk in response.iter_raw():  # as it arrives (a chunk size would buffer)
                        sink.feed_compressed(chunk)
                        if time.monotonic() > deadline:
                            raise DownloadTransient("timeout", url, f"not finished after {limits.deadline:g} s")
                    return
            raise DownloadPermanent("redirect-refused", url, f"more than {MAX_REDIRECTS} redirects")
    except httpx.TimeoutException as exc:
        raise DownloadTransient("timeout", url, f"no answer within {limits.io_timeout:g} s ({exc})") from None
    except httpx.HTTPError as exc:
        raise DownloadTransient("unreachable", url, f"{type(exc).__name__}: {exc}") from None


def _redirect_target(url: str, current: str, location: str) -> str:
    target = urljoin(current, location)
    parts = urlsplit(target)
    if parts.scheme.lower() not in WEB_SCHEMES or not parts.hostname:
        raise DownloadPermanent("redirect-refused", url, f"redirected to {target!r}; only http(s) is followed")
    return target


def _check_status(url: str, status: int) -> None:
    if status == 200:
        return
    kind = DownloadTransient if status >= 500 or status in (408, 429) else DownloadPermanent
    raise kind("unreachable", url, f"the server answered HTTP {status}")


def _fetch_file(url: str, sink: _Sink, deadline: float) -> None:
    path = unquote(urlsplit(url).path)
    try:
        with open(path, "rb") as source:  # noqa: PTH123 - a path checked by location_problem
            while chunk := source.read(CHUNK_BYTES):
                sink.feed_compressed(chunk)
                if time.monotonic() > deadline:
                    raise DownloadTransient("timeout", url, "reading the file took longer than the deadline")
    except FileNotFoundError:
        raise DownloadPermanent("unreachable", url, "no such file") from None
    except IsADirectoryError:
        raise DownloadPermanent("unreachable", url, "a directory, not an image file") from None
    except PermissionError:
        raise DownloadPermanent("unreachable", url, "the file cannot be read (permission denied)") from None
    except OSError as exc:
        raise DownloadTransient("unreachable", url, f"reading failed: {exc}") from None


# --- decompress, bound, hash, write ------------------------------------------------------------------------


class _Sink:
    """Takes the bytes as the source sends them; writes the uncompressed image, never more than expected."""

    def __init__(self, url: str, expected: Expected, compression: str, out: IO[bytes]) -> None:
        self.url = url
        self.expected = expected
        self.out = out
        self.compressed = 0
        self.written = 0
        self.sha1 = hashlib.sha1()  # noqa: S324 - the Marketplace names images by SHA-1 (DESIGN §2.1)
        self.sha256 = hashlib.sha256() if expected.sha256 else None
        self.inflater = _Inflater(compression) if compression else None

    @property
    def bound(self) -> int:
        return compressed_bound(self.expected.bytes) if self.inflater else self.expected.bytes

    def check_announced(self, content_length: str) -> None:
        """Refuse before reading when the server announces more than the bound."""
        if content_length.isdigit() and int(content_length) > self.bound:
            raise DownloadPermanent("too-large", self.url, f"the server announces {content_length} bytes")

    def feed_compressed(self, chunk: bytes) -> None:
        self.compressed += len(chunk)
        bound = self.bound
        if self.compressed > bound:
            raise DownloadPermanent("too-large", self.url, f"the source sent more than {bound} bytes")
        if self.inflater is None:
            self._write(chunk)
            return
        try:
            for piece in self.inflater.feed(chunk):
                self._write(piece)
        except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
            raise DownloadPermanent("decompress-failed", self.url, f"not valid {self.inflater.name}: {exc}") from None

    def _write(self, piece: bytes) -> None:
        if not piece:
            return
        self.written += len(piece)
        if self.written > self.expected.bytes:
            raise DownloadPermanent(
                "too-large", self.url, f"the image is larger than its fixed size of {self.expected.bytes} bytes"
            )
        self.sha1.update(piece)
        if self.sha256 is not None:
            self.sha256.update(piece)
        self.out.write(piece)

    def finish(self) -> Expected:
        if self.inflater is not None and not self.inflater.complete:
            raise DownloadPermanent("decompress-failed", self.url, f"the {self.inflater.name} stream is truncated")
        if self.written != self.expected.bytes:
            raise DownloadPermanent(
                "size-mismatch", self.url, f"{self.written} bytes, but the image's fixed size is {self.expected.bytes}"
            )
        sha1 = self.sha1.hexdigest()
        if sha1 != self.expected.sha1.lower():
            raise DownloadPermanent("sha1-mismatch", self.url, f"SHA-1 {sha1}, expected {self.expected.sha1.lower()}")
        sha256 = self.sha256.hexdigest() if self.sha256 is not None else ""
        if sha256 != self.expected.sha256.lower():
            raise DownloadPermanent(
                "sha256-mismatch", self.url, f"SHA-256 {sha256}, expected {self.expected.sha256.lower()}"
            )
        return Expected(self.written, sha1, sha256)


class _Inflater:
    """Streaming gz/bz2/xz decompression whose every output piece is at most ``CHUNK_BYTES`` (so a small
    compressed bomb cannot fill memory before the size bound stops it); concatenated streams are read on."""

    _NAMES = {"gz": "gzip", "bz2": "bzip2", "xz": "xz"}

    def __init__(self, compression: str) -> None:
        self.compression = compression
        self.name = self._NAMES[compression]
        self._current = self._new()
        self._started = False

    def _new(self) -> _Decompressor:
        if self.compression == "gz":
            return _Zlib()
        if self.compression == "bz2":
            return _Stdlib(bz2.BZ2Decompressor())
        return _Stdlib(lzma.LZMADecompressor())

    @property
    def complete(self) -> bool:
        return self._started and self._current.eof

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self._current.eof:
                # Another stream follows (pigz, pbzip2 and xz write several); anything else is garbage.
                self._current = self._new()
            self._started = True
            yield from self._current.feed(data)
            data = self._current.unused_data if self._current.eof else b""


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def feed(self, data: bytes) -> Iterator[bytes]: ...


class _Zlib:
    def __init__(self) -> None:
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing only

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    def feed(self, data: bytes) -> Iterator[bytes]:
        yield self._d.decompress(data, CHUNK_BYTES)
        while self._d.unconsumed_tail and not self._d.eof:
            yield self._d.decompress(self._d.unconsumed_tail, CHUNK_BYTES)


class _Stdlib:
    def __init__(self, decompressor: bz2.BZ2Decompressor | lzma.LZMADecompressor) -> None:
        self._d = decompressor

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    def feed(self, data: bytes) -> Iterator[bytes]:
        yield self._d.decompress(data, max_length=CHUNK_BYTES)
        while not self._d.eof and not self._d.needs_input:
            yield self._d.decompress(b"", max_length=CHUNK_BYTES)
