"""A host's disk templates: qemu-img makes one root overlay per cached image file and size, and every VM's root disk is
a copy of it, byte for byte what ``qemu-img create`` writes; a cached file written again gets a new template."""

from __future__ import annotations

import os
import shutil

import pytest

from compute import execution
from storage.backends import qemu_img

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


@pytest.fixture
def base(settings, tmp_path):
    settings.INSTANCE_DIR = tmp_path / "instances"
    path = tmp_path / "cache" / "image.raw"
    path.parent.mkdir()
    path.write_bytes(os.urandom(64 * 1024))
    return path


def _templates() -> list[str]:
    return sorted(p.name for p in execution.templates_dir().iterdir())


def test_a_root_disk_is_the_overlay_qemu_img_writes_on_the_cached_image(base, tmp_path):
    made = tmp_path / "vm1" / "root.qcow2"
    made.parent.mkdir()
    execution.root_overlay_create(backing=base, path=made, size_gib=10)
    direct = tmp_path / "direct.qcow2"
    qemu_img.overlay_create(backing=base, path=direct, size_gib=10)
    assert made.read_bytes() == direct.read_bytes()
    found = qemu_img.info(made)
    assert (found.format, found.virtual_size, found.backing, found.backing_format) == (
        "qcow2",
        10 * 1024**3,
        base.resolve(),
        "raw",
    )
    assert [p.name for p in made.parent.iterdir()] == ["root.qcow2"]  # no partial file left


def test_root_disks_of_one_image_and_size_share_one_template_made_once(base, tmp_path):
    for n in (1, 2):
        (tmp_path / f"vm{n}").mkdir()
        execution.root_overlay_create(backing=base, path=tmp_path / f"vm{n}" / "root.qcow2", size_gib=10)
        if n == 1:
            (template,) = _templates()
            made = (execution.templates_dir() / template).stat().st_mtime_ns
    assert _templates() == [template]
    assert (execution.templates_dir() / template).stat().st_mtime_ns == made
    assert (tmp_path / "vm1" / "root.qcow2").read_bytes() == (tmp_path / "vm2" / "root.qcow2").read_bytes()
    (tmp_path / "vm3").mkdir()
    execution.root_overlay_create(backing=base, path=tmp_path / "vm3" / "root.qcow2", size_gib=20)
    assert len(_templates()) == 2
    assert qemu_img.info(tmp_path / "vm3" / "root.qcow2").virtual_size == 20 * 1024**3


def test_a_cached_image_written_again_gets_a_template_of_its_own(base, tmp_path):
    (tmp_path / "vm1").mkdir()
    execution.root_overlay_create(backing=base, path=tmp_path / "vm1" / "root.qcow2", size_gib=1)
    # The cache downloads the image again, larger: the overlay takes the new file's size, as qemu-img would.
    replacement = base.with_name("new.raw")
    with open(replacement, "wb") as handle:
        handle.write(os.urandom(64 * 1024))
        handle.truncate(2 * 1024**3)
    replacement.replace(base)
    (tmp_path / "vm2").mkdir()
    execution.root_overlay_create(backing=base, path=tmp_path / "vm2" / "root.qcow2", size_gib=1)
    assert len(_templates()) == 2
    assert qemu_img.info(tmp_path / "vm2" / "root.qcow2").virtual_size == 2 * 1024**3


def test_an_existing_root_disk_is_kept_and_another_file_there_refused(base, tmp_path):
    (tmp_path / "vm1").mkdir()
    root = tmp_path / "vm1" / "root.qcow2"
    execution.root_overlay_create(backing=base, path=root, size_gib=10)
    made = root.stat().st_mtime_ns
    execution.root_overlay_create(backing=base, path=root, size_gib=10)  # the step run again
    assert root.stat().st_mtime_ns == made
    other = tmp_path / "vm2" / "root.qcow2"
    other.parent.mkdir()
    other.write_bytes(b"not an overlay")
    with pytest.raises(qemu_img.QemuImgPermanent, match="is not an overlay"):
        execution.root_overlay_create(backing=base, path=other, size_gib=10)
    assert other.read_bytes() == b"not an overlay"
