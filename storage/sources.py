"""How a VM reaches a volume: plain data, no Django (the contract between storage and compute).

Compute turns a :class:`VolumeSource` into the disk of a domain: a file (``<disk type='file'>``) or an iSCSI LUN
(``<disk type='network'>`` with protocol ``iscsi``, and ``<auth>`` when CHAP is set); ``read_only`` volumes are
attached ``<readonly/>``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VolumeSource:
    backend: str  # "file" | "iscsi"
    format: str  # "qcow2" | "raw"
    read_only: bool  # True for static volumes
    path: str | None = None  # file backend: absolute path of the file
    portal: str | None = None  # iscsi: "host:port" initiators connect to (from settings)
    iqn: str | None = None  # iscsi: target name
    lun: int | None = None  # iscsi: LUN number (1)
    chap_username: str | None = None
    chap_secret: str | None = None

    def __repr__(self) -> str:  # never print the CHAP secret into a log
        secret = "'***'" if self.chap_secret else "None"
        return (
            f"VolumeSource(backend={self.backend!r}, format={self.format!r}, read_only={self.read_only!r}, "
            f"path={self.path!r}, portal={self.portal!r}, iqn={self.iqn!r}, lun={self.lun!r}, "
            f"chap_username={self.chap_username!r}, chap_secret={secret})"
        )
