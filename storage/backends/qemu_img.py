"""The qemu-img adapter: the only module that runs ``qemu-img`` (STYLE: adapters own their processes).

Every call has a timeout and raises :class:`QemuImgTransient` (timed out, could not start) or
:class:`QemuImgPermanent` (qemu-img refused: bad file, wrong backing, no space). Creating is idempotent:
a target that already exists as asked (same format, same backing) is left alone; one that differs is refused."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import AdapterError, PermanentError, TransientError

QEMU_IMG = "qemu-img"
TIMEOUT_SECONDS = 120


class QemuImgError(AdapterError):
    """qemu-img failed; the message is what it said."""


class QemuImgTransient(QemuImgError, TransientError):
    """qemu-img did not finish in time or could not be started."""


class QemuImgPermanent(QemuImgError, PermanentError):
    """qemu-img refused the request (bad image, wrong backing file, no space)."""


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    format: str
    virtual_size: int
    backing: Path | None
    backing_format: str | None


def _run(*args: str, timeout: int = TIMEOUT_SECONDS) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - fixed program, arguments are paths and numbers
            [QEMU_IMG, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise QemuImgTransient(f"qemu-img {args[0]} did not finish in {timeout} s") from None
    except OSError as exc:
        raise QemuImgTransient(f"qemu-img could not be started: {exc}") from None
    if done.returncode != 0:
        raise QemuImgPermanent(f"qemu-img {args[0]} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def info(path: Path) -> ImageInfo:
    """What qemu-img says about the image at ``path`` (format, virtual size, backing file).

    Remembered per file version (device, inode, size, modification time): a cached image that backs every new
    VM's overlay is asked once per worker, not once per VM. A file written since is asked again."""
    try:
        st = os.stat(path)
    except OSError:
        return _info(str(path))  # not a local file (or none): qemu-img says what is there or what is wrong
    return _info_of_version(str(path), (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


@functools.lru_cache(maxsize=256)
def _info_of_version(path: str, version: tuple[int, int, int, int]) -> ImageInfo:
    return _info(path)


def _info(path: str) -> ImageInfo:
    data: dict[str, Any] = json.loads(_run("info", "--output=json", "-U", path))
    backing = data.get("full-backing-filename") or data.get("backing-filename")
    return ImageInfo(
        path=Path(path),
        format=str(data.get("format", "")),
        virtual_size=int(data.get("virtual-size", 0)),
        backing=Path(backing) if backing else None,
        backing_format=data.get("backing-filename-format"),
    )


def _gib(size_gib: int) -> str:
    if isinstance(size_gib, bool) or size_gib < 1:
        raise QemuImgPermanent(f"a disk size must be at least 1 GiB, not {size_gib}")
    return f"{size_gib}G"


def overlay_create(*, backing: Path, path: Path, size_gib: int | None, backing_format: str | None = None) -> ImageInfo:
    """A qcow2 overlay at ``path`` on ``backing`` (its format given explicitly: read from the backing file
    unless ``backing_format`` says), of ``size_gib`` GiB or the backing file's size when ``None`` or smaller.

    Idempotent: an existing qcow2 at ``path`` on the same backing file is kept; any other file there is refused."""
    backing = Path(backing).resolve()
    path = Path(path)
    if path.exists():
        found = info(path)
        if found.format == "qcow2" and found.backing is not None and found.backing.resolve() == backing:
            return found
        raise QemuImgPermanent(f"{path} exists and is not an overlay on {backing}")
    base = info(backing)
    fmt = backing_format or base.format
    args = ["create", "-q", "-f", "qcow2", "-b", str(backing), "-F", fmt, str(path)]
    size = base.virtual_size
    if size_gib is not None and size_gib * 1024**3 > base.virtual_size:
        args.append(_gib(size_gib))
        size = size_gib * 1024**3
    _create(path, args)
    # What ``info`` would say of the overlay just made, without running qemu-img a third time.
    return ImageInfo(path=path, format="qcow2", virtual_size=size, backing=backing, backing_format=fmt)


def image_create(*, path: Path, size_gib: int, fmt: str = "qcow2") -> ImageInfo:
    """An empty image (a volatile disk) of ``size_gib`` GiB at ``path``. Idempotent: an existing image of that
    format and size is kept; any other file there is refused."""
    path = Path(path)
    size = _gib(size_gib)
    if path.exists():
        found = info(path)
        if found.format == fmt and found.backing is None and found.virtual_size == size_gib * 1024**3:
            return found
        raise QemuImgPermanent(f"{path} exists and is not an empty {fmt} image of {size_gib} GiB")
    _create(path, ["create", "-q", "-f", fmt, str(path), size])
    return info(path)


def _create(path: Path, args: list[str]) -> None:
    """Create into a temporary name, then rename: a crash mid-create leaves no half image at ``path``."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    args = [str(partial) if a == str(path) else a for a in args]
    try:
        _run(*args)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def image_copy(*, source: Path, source_format: str, path: Path, fmt: str, size_gib: int) -> ImageInfo:
    """A standalone copy of ``source`` (read as ``source_format``, never probed) at ``path`` in ``fmt``, grown to
    ``size_gib`` GiB when the source is smaller (a static volume filled from the image cache).

    A source that names a backing file is refused: a hostile qcow2 could otherwise pull any file the worker can
    read into the copy. So is one whose disk (virtual size) is larger than ``size_gib``. Idempotent: an existing
    image at ``path`` of that format, with no backing file and at least that size, is kept; any other file there
    is refused."""
    path = Path(path)
    wanted = size_gib * 1024**3
    if path.exists():
        found = info(path)
        if found.format == fmt and found.backing is None and found.virtual_size >= wanted:
            return found
        raise QemuImgPermanent(f"{path} exists and is not a {fmt} copy of {size_gib} GiB")
    origin = info(source)
    if source_format == "qcow2" and origin.backing is not None:
        raise QemuImgPermanent(f"{source} names a backing file ({origin.backing}); it cannot be copied")
    _gib(size_gib)
    if source_format != "raw" and origin.virtual_size > wanted:
        # A qcow2 image's disk can be far larger than its file: the copy would outgrow the size (and quota) asked.
        needed = -(-origin.virtual_size // 1024**3)
        raise QemuImgPermanent(
            f"the image's disk is {needed} GiB, larger than the {size_gib} GiB asked for; ask for at least {needed}"
        )
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        _run("convert", "-q", "-f", source_format, "-O", fmt, str(source), str(partial))
        if info(partial).virtual_size < wanted:
            _run("resize", "-q", "-f", fmt, str(partial), str(wanted))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return info(path)
