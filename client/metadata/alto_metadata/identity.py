"""The 27-character identifier (DESIGN.md §2.1) and the checksums of image files."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, cast

from alto_metadata.vocabulary import _HASHLIB, _HEX_RE, _ID_RE, ALGORITHMS, ID_ALPHABET, ID_LENGTH

# ---------------------------------------------------------------------------------------------------------------
# Identifier and checksums


def identifier_from_sha1(sha1_hex: str) -> str:
    """The 27-character identifier of an image: its SHA-1 as a 160-bit number in radix 64 (DESIGN.md §2.1).

    Leading zeros of the hex value do not matter: "00ab" and "ab" denote the same number."""
    if not isinstance(sha1_hex, str) or not _HEX_RE.fullmatch(sha1_hex) or len(sha1_hex.lstrip("0")) > 40:
        raise ValueError(f"not a SHA-1 hex digest: {sha1_hex!r}")
    number = int(sha1_hex, 16)
    digits = []
    for _ in range(ID_LENGTH):
        number, digit = divmod(number, 64)
        digits.append(ID_ALPHABET[digit])
    return "".join(reversed(digits))


def sha1_from_identifier(identifier: str) -> str:
    """The inverse of :func:`identifier_from_sha1`: the 40-digit lower-case SHA-1 hex the identifier encodes."""
    if not _ID_RE.fullmatch(identifier):
        raise ValueError(f"not an identifier: {identifier!r}")
    number = 0
    for char in identifier:
        number = number * 64 + ID_ALPHABET.index(char)
    if number >= 1 << 160:
        raise ValueError(f"identifier {identifier!r} is larger than a 160-bit SHA-1")
    return f"{number:040x}"


def is_identifier(value: str) -> bool:
    """Whether ``value`` is a well-formed identifier (27 radix-64 digits encoding at most 160 bits)."""
    try:
        sha1_from_identifier(value)
    except ValueError:
        return False
    return True


_MAGIC: tuple[tuple[bytes, str], ...] = ((b"\x1f\x8b", "gz"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"))


def detect_compression(path: str | Path) -> str:
    """``gz``, ``bz2``, ``xz`` from the file's magic bytes, or ``""`` for an uncompressed file."""
    with open(path, "rb") as handle:
        head = handle.read(6)
    return next((name for magic, name in _MAGIC if head.startswith(magic)), "")


class _Counting:
    """A file read through, telling ``on_read`` how many bytes of it each read took (for progress bars)."""

    def __init__(self, raw: BinaryIO, on_read: Callable[[int], object]) -> None:
        self.raw = raw
        self.on_read = on_read

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(size)
        self.on_read(len(chunk))
        return chunk

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.on_read(count or 0)
        return count

    def __getattr__(self, name: str) -> object:
        return getattr(self.raw, name)

    def __enter__(self) -> _Counting:
        return self

    def __exit__(self, *exc: object) -> None:
        pass  # the file is closed by whoever opened it


def _open_uncompressed(raw: BinaryIO, compression: str) -> BinaryIO:
    if compression == "gz":
        return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb"))
    if compression == "bz2":
        return cast(BinaryIO, bz2.BZ2File(raw, "rb"))
    if compression == "xz":
        return cast(BinaryIO, lzma.LZMAFile(raw, "rb"))
    return raw


def file_checksums(
    path: str | Path,
    algorithms: Iterable[str] = ("SHA-1", "SHA-256"),
    *,
    on_read: Callable[[int], object] | None = None,
) -> tuple[int, dict[str, str]]:
    """(uncompressed size in bytes, {algorithm: lower-case hex}) of an image file, read once in chunks.

    A gzip, bzip2 or xz file is decompressed on the fly: the identifier and checksums describe the image.
    ``on_read(n)`` is told each time ``n`` more bytes of the file (as stored, compressed or not) were read."""
    names = list(algorithms)
    unknown = [name for name in names if name not in ALGORITHMS]
    if unknown:
        raise ValueError(f"unknown checksum algorithm(s) {unknown}; use {sorted(ALGORITHMS)}")
    path = Path(path)
    hashers = {name: hashlib.new(_HASHLIB[name], usedforsecurity=name != "MD5") for name in names}
    size = 0
    with open(path, "rb") as stored:
        raw = cast(BinaryIO, _Counting(stored, on_read)) if on_read is not None else stored
        with _open_uncompressed(raw, detect_compression(path)) as stream:
            while chunk := stream.read(1024 * 1024):
                size += len(chunk)
                for hasher in hashers.values():
                    hasher.update(chunk)
    return size, {name: hasher.hexdigest() for name, hasher in hashers.items()}
