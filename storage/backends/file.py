"""The ``file`` backend: each volume is one qcow2 or raw file in ``STORAGE_FILE_DIR`` (in production an NFS export
mounted at the same path on every host), made and copied with qemu-img."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storage.backends import qemu_img
from storage.backends.base import Fill, VolumeSpec
from storage.sources import VolumeSource


def write_volume_file(spec: VolumeSpec, fill: Fill | None) -> None:
    """The volume's file: empty, or a copy of ``fill`` grown to the volume's size. Idempotent (qemu-img adapter)."""
    spec.path.parent.mkdir(parents=True, exist_ok=True)
    if fill is None:
        qemu_img.image_create(path=spec.path, size_gib=spec.size_gib, fmt=spec.format)
    else:
        qemu_img.image_copy(
            source=fill.path, source_format=fill.format, path=spec.path, fmt=spec.format, size_gib=spec.size_gib
        )


def remove_volume_file(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".partial").unlink(missing_ok=True)


@dataclass(frozen=True)
class FileBackend:
    name: str = "file"

    def create(self, spec: VolumeSpec, *, fill: Fill | None = None) -> None:
        write_volume_file(spec, fill)

    def delete(self, spec: VolumeSpec) -> None:
        remove_volume_file(spec.path)

    def restore(self, spec: VolumeSpec) -> bool:
        if not spec.path.exists():
            raise qemu_img.QemuImgPermanent(f"the file of volume {spec.uuid} is missing: {spec.path}")
        return False

    def source(self, spec: VolumeSpec) -> VolumeSource:
        return VolumeSource(backend=self.name, format=spec.format, read_only=spec.read_only, path=str(spec.path))
