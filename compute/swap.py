"""The adapter that makes a VM's swap disk (DESIGN §4): a sparse raw file formatted by util-linux's ``mkswap``
on the host, labelled so that the guest's cloud-init finds it whatever device name the guest gives it
(``mounts: [[LABEL=alto-swap, none, swap, sw, …]]`` in our ``#cloud-config``), as Nova formats its swap disks."""

from __future__ import annotations

import os
import shutil
import subprocess  # noqa: S404 - running mkswap is this adapter's job
from pathlib import Path

from core.errors import PermanentError

LABEL = "alto-swap"
# The swap disk's device name: the last single-letter virtio name, which volume attachments never take.
TARGET = "vdz"
MKSWAP_TIMEOUT_SECONDS = 60
_MKSWAP_DIRS = "/usr/sbin:/sbin:/usr/bin:/bin"


class SwapDiskError(PermanentError):
    """mkswap is missing or refused (a full disk, a size it does not accept)."""


def swap_disk_create(*, path: Path, size_mib: int) -> None:
    """A raw swap disk of ``size_mib`` MiB at ``path`` labelled :data:`LABEL`. Idempotent: an existing file of that
    size is kept (it was made by an earlier run of the same step, before the guest ever used it)."""
    if size_mib <= 0:
        raise ValueError(f"a swap disk needs a positive size, got {size_mib} MiB")
    size = size_mib * 2**20
    if path.exists() and path.stat().st_size == size:
        return
    mkswap = shutil.which("mkswap", path=f"{os.environ.get('PATH', '')}:{_MKSWAP_DIRS}")
    if mkswap is None:
        raise SwapDiskError("mkswap (util-linux) is not installed on this host")
    partial = path.with_name(f".{path.name}.partial")
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
        raise SwapDiskError(f"mkswap did not finish in {MKSWAP_TIMEOUT_SECONDS} s on {path}") from None
    if done.returncode:
        partial.unlink(missing_ok=True)
        raise SwapDiskError(f"mkswap refused {path}: {(done.stderr or done.stdout).strip()[-500:]}")
    partial.replace(path)
