"""The adapter that makes a VM's swap disk (DESIGN §4): a sparse raw file formatted by util-linux's ``mkswap``
on the host, labelled so that the guest's cloud-init finds it whatever device name the guest gives it
(``mounts: [[LABEL=alto-swap, none, swap, sw, …]]`` in our ``#cloud-config``), as Nova formats its swap disks.

``mkswap`` runs once per size on a host, into a template kept in a directory the caller names; each VM's disk is a
sparse copy of that template (only its header page holds data) given a swap UUID of its own, as ``swaplabel -U``
would set it. A process start per VM costs more than the whole copy."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess  # noqa: S404 - running mkswap is this adapter's job
import uuid
from pathlib import Path

from core.errors import PermanentError

LABEL = "alto-swap"
# The swap disk's device name: the last single-letter virtio name, which volume attachments never take.
TARGET = "vdz"
MKSWAP_TIMEOUT_SECONDS = 60
_MKSWAP_DIRS = "/usr/sbin:/sbin:/usr/bin:/bin"
# The version-1 swap header (util-linux's struct swap_header_v1_2, the kernel's union swap_header): after 1,024 bytes
# of boot block, the version, last page and bad page count (4 bytes each), the 16-byte UUID, then the 16-byte label;
# the page ends with the magic SWAPSPACE2.
_UUID_AT = 1036
_LABEL_AT = 1052
_MAGIC = b"SWAPSPACE2"
_COPY_CHUNK = 1 << 20


class SwapDiskError(PermanentError):
    """mkswap is missing or refused (a full disk, a size it does not accept)."""


def swap_disk_create(*, path: Path, size_mib: int, template_dir: Path | None = None) -> None:
    """A raw swap disk of ``size_mib`` MiB at ``path`` labelled :data:`LABEL`, with a swap UUID of its own. Idempotent:
    an existing file of that size is kept (it was made by an earlier run of the same step, before the guest ever
    used it).

    With ``template_dir`` (on the host, owner-only), mkswap formats one template per size there, made once and
    copied for every disk of that size; without it, mkswap formats ``path`` itself."""
    if size_mib <= 0:
        raise ValueError(f"a swap disk needs a positive size, got {size_mib} MiB")
    size = size_mib * 2**20
    if path.exists() and path.stat().st_size == size:
        return
    partial = path.with_name(f".{path.name}.partial")
    if template_dir is None:
        _format(partial, size)
    else:
        template = _template(template_dir, size_mib)
        try:
            _sparse_copy(template, partial, size)
            _set_uuid(partial, uuid.uuid4())
        except OSError:
            partial.unlink(missing_ok=True)
            raise
    partial.replace(path)


def _template(directory: Path, size_mib: int) -> Path:
    """The formatted template of ``size_mib`` MiB in ``directory``, made now if it is missing or not a swap area of
    that size. Two workers making it at once each format their own file and rename it in place: either is good."""
    template = directory / f"swap-{size_mib}M.img"
    size = size_mib * 2**20
    if _is_swap_template(template, size):
        return template
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = directory / f".{template.name}.{uuid.uuid4().hex}.partial"
    _format(partial, size)
    partial.replace(template)
    return template


def _is_swap_template(path: Path, size: int) -> bool:
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size != size:
                return False
            header = handle.read(page)
    except FileNotFoundError:
        return False
    return header[page - len(_MAGIC) :] == _MAGIC and header[_LABEL_AT : _LABEL_AT + len(LABEL)] == LABEL.encode()


def _format(partial: Path, size: int) -> None:
    """A sparse file of ``size`` bytes at ``partial``, formatted by mkswap; removed if mkswap fails."""
    mkswap = shutil.which("mkswap", path=f"{os.environ.get('PATH', '')}:{_MKSWAP_DIRS}")
    if mkswap is None:
        raise SwapDiskError("mkswap (util-linux) is not installed on this host")
    # Owner-only, as the guest's memory pages land in it; sparse: the host's disk fills only as the guest swaps.
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
        handle.truncate(size)
    try:
        done = subprocess.run(  # noqa: S603 - a fixed program and arguments, no shell
            [mkswap, "--label", LABEL, str(partial)],
            capture_output=True,
            text=True,
            timeout=MKSWAP_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        partial.unlink(missing_ok=True)
        raise SwapDiskError(f"mkswap did not finish in {MKSWAP_TIMEOUT_SECONDS} s on {partial}") from None
    if done.returncode:
        partial.unlink(missing_ok=True)
        raise SwapDiskError(f"mkswap refused {partial}: {(done.stderr or done.stdout).strip()[-500:]}")


def _sparse_copy(source: Path, target: Path, size: int) -> None:
    """Copy ``source`` to a new owner-only ``target`` of ``size`` bytes, writing only its non-zero data: the holes
    stay holes (where the file system reports none, zero chunks are skipped all the same)."""
    with (
        open(source, "rb") as src,
        os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as dst,
    ):
        dst.truncate(size)
        fd = src.fileno()
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data past offset
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            src.seek(start)
            while start < end:
                chunk = src.read(min(_COPY_CHUNK, end - start))
                if not chunk:
                    break
                if chunk.count(0) != len(chunk):
                    dst.seek(start)
                    dst.write(chunk)
                start += len(chunk)
            offset = end


def _set_uuid(path: Path, value: uuid.UUID) -> None:
    with open(path, "r+b") as handle:
        handle.seek(_UUID_AT)
        handle.write(value.bytes)
