"""The one interface every volume backend offers (``file``, ``iscsi``), and what it is given.

A backend is an adapter: it knows files, qemu-img and tgtadm, never the database. Services hand it a
:class:`VolumeSpec` (what the volume row fixed when it was made) and translate its errors (subclasses of
``core.errors.TransientError`` / ``PermanentError``). Every operation is idempotent, so that a task that runs
twice, or a reconciliation that repeats it, changes nothing more."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from storage.sources import VolumeSource


@dataclass(frozen=True)
class VolumeSpec:
    uuid: str
    size_gib: int
    format: str
    path: Path
    read_only: bool
    iqn: str = ""
    chap_username: str = ""
    chap_secret: str = ""


@dataclass(frozen=True)
class Fill:
    """What a new volume starts with: a copy of ``path`` (a verified image in the image cache) read as ``format``."""

    path: Path
    format: str


class VolumeBackend(Protocol):
    @property
    def name(self) -> str: ...

    def create(self, spec: VolumeSpec, *, fill: Fill | None = None) -> None:
        """Make the volume (empty, or a copy of ``fill``) and make it reachable. Idempotent."""

    def delete(self, spec: VolumeSpec) -> None:
        """Make it unreachable and remove its data. Idempotent: nothing there is fine."""

    def restore(self, spec: VolumeSpec) -> bool:
        """Make an existing volume reachable again (after the target daemon forgot it); True when something had
        to be done. Does not create data: a missing file is a permanent error."""

    def source(self, spec: VolumeSpec) -> VolumeSource:
        """How a VM reaches it."""
