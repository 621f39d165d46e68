"""Volume backends (DESIGN §5) behind one interface (``base.VolumeBackend``): ``file`` and ``iscsi``, configured
from the settings. The adapters below them (``qemu_img``, ``tgt``) are the only code that runs qemu-img or
tgtadm."""

from __future__ import annotations

from django.conf import settings

from storage.backends.base import Fill, VolumeBackend, VolumeSpec
from storage.backends.file import FileBackend
from storage.backends.iscsi import IscsiBackend
from storage.backends.tgt import Tgt

__all__ = ["Fill", "VolumeBackend", "VolumeSpec", "backend_for", "iscsi_backend"]


def iscsi_backend() -> IscsiBackend:
    return IscsiBackend(
        tgt=Tgt(control_port=settings.ISCSI_CONTROL_PORT),
        portal=settings.ISCSI_PORTAL,
        initiators=tuple(settings.ISCSI_INITIATORS),
    )


def backend_for(name: str) -> VolumeBackend:
    """The backend a volume lives on (by the name it was made with), as the settings configure it now."""
    if name == "file":
        return FileBackend()
    if name == "iscsi":
        return iscsi_backend()
    raise ValueError(f"unknown volume backend {name!r}")
