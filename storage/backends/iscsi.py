"""The ``iscsi`` backend: one tgt target per volume (``iqn.<yyyy-mm>.<site>:<uuid>``) exporting a raw file in
``ISCSI_DIR`` as LUN 1, read-only for static volumes, to the configured initiators, with the volume's own CHAP
account when the site turns CHAP on. VMs attach the LUN through qemu's iSCSI initiator at ``ISCSI_PORTAL``."""

from __future__ import annotations

from dataclasses import dataclass

from storage.backends import qemu_img
from storage.backends.base import Fill, VolumeSpec
from storage.backends.file import remove_volume_file, write_volume_file
from storage.backends.tgt import LUN, Tgt
from storage.sources import VolumeSource


@dataclass(frozen=True)
class IscsiBackend:
    tgt: Tgt
    portal: str
    initiators: tuple[str, ...] = ("ALL",)
    name: str = "iscsi"

    def create(self, spec: VolumeSpec, *, fill: Fill | None = None) -> None:
        if spec.format != "raw":
            raise qemu_img.QemuImgPermanent(f"iSCSI volumes are raw files, not {spec.format}")
        write_volume_file(spec, fill)
        self._export(spec)

    def _export(self, spec: VolumeSpec) -> bool:
        _target, made = self.tgt.target_ensure(
            iqn=spec.iqn,
            backing=spec.path,
            read_only=spec.read_only,
            initiators=self.initiators,
            chap_username=spec.chap_username,
            chap_secret=spec.chap_secret,
        )
        return made

    def delete(self, spec: VolumeSpec) -> None:
        self.tgt.target_remove(iqn=spec.iqn, chap_username=spec.chap_username)
        remove_volume_file(spec.path)

    def restore(self, spec: VolumeSpec) -> bool:
        if not spec.path.exists():
            raise qemu_img.QemuImgPermanent(f"the backing file of volume {spec.uuid} is missing: {spec.path}")
        return self._export(spec)

    def exported(self) -> set[str]:
        """The IQNs tgtd exports now."""
        return set(self.tgt.targets())

    def source(self, spec: VolumeSpec) -> VolumeSource:
        return VolumeSource(
            backend=self.name,
            format=spec.format,
            read_only=spec.read_only,
            portal=self.portal,
            iqn=spec.iqn,
            lun=LUN,
            chap_username=spec.chap_username or None,
            chap_secret=spec.chap_secret or None,
        )
