"""The qemu-img adapter against the real qemu-img on temporary files."""

from __future__ import annotations

import os
import shutil

import pytest

from storage.backends import qemu_img

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

GIB = 1024**3


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "base.raw"
    qemu_img.image_create(path=path, size_gib=1, fmt="raw")
    return path


def test_overlay_on_a_raw_image_names_its_backing_and_format(base, tmp_path):
    made = qemu_img.overlay_create(backing=base, path=tmp_path / "root.qcow2", size_gib=3)
    assert made.format == "qcow2"
    assert made.backing == base.resolve()
    assert made.backing_format == "raw"
    assert made.virtual_size == 3 * GIB
    assert made == qemu_img.info(made.path)  # what qemu-img says of the overlay made


def test_overlay_never_shrinks_below_its_backing(base, tmp_path):
    assert qemu_img.overlay_create(backing=base, path=tmp_path / "r.qcow2", size_gib=None).virtual_size == GIB


def test_overlay_again_is_kept(base, tmp_path):
    target = tmp_path / "root.qcow2"
    first = qemu_img.overlay_create(backing=base, path=target, size_gib=2)
    mtime = target.stat().st_mtime_ns
    assert qemu_img.overlay_create(backing=base, path=target, size_gib=2) == first
    assert target.stat().st_mtime_ns == mtime


def test_overlay_over_another_file_is_refused(base, tmp_path):
    target = tmp_path / "root.qcow2"
    target.write_bytes(b"not an overlay")
    with pytest.raises(qemu_img.QemuImgPermanent, match="not an overlay"):
        qemu_img.overlay_create(backing=base, path=target, size_gib=2)


def test_missing_backing_is_permanent(tmp_path):
    with pytest.raises(qemu_img.QemuImgPermanent):
        qemu_img.overlay_create(backing=tmp_path / "nope", path=tmp_path / "root.qcow2", size_gib=1)
    assert list(tmp_path.iterdir()) == []


def test_volatile_image_is_idempotent_and_checks_its_size(tmp_path):
    target = tmp_path / "volatile.qcow2"
    made = qemu_img.image_create(path=target, size_gib=2)
    assert (made.format, made.virtual_size, made.backing) == ("qcow2", 2 * GIB, None)
    assert qemu_img.image_create(path=target, size_gib=2) == made
    with pytest.raises(qemu_img.QemuImgPermanent, match="2 GiB|5 GiB"):
        qemu_img.image_create(path=target, size_gib=5)
    with pytest.raises(qemu_img.QemuImgPermanent):
        qemu_img.image_create(path=tmp_path / "zero.qcow2", size_gib=0)


def test_timeout_is_transient(tmp_path, monkeypatch):
    monkeypatch.setattr(qemu_img, "QEMU_IMG", "sleep")
    with pytest.raises(qemu_img.QemuImgTransient, match="did not finish"):
        qemu_img._run("5", timeout=1)


def test_missing_program_is_transient(monkeypatch):
    monkeypatch.setattr(qemu_img, "QEMU_IMG", "/nonexistent/qemu-img")
    with pytest.raises(qemu_img.QemuImgTransient, match="could not be started"):
        qemu_img._run("info")


def test_info_asks_qemu_img_once_per_version_of_a_file(base, tmp_path, monkeypatch):
    runs = []
    real = qemu_img._run
    monkeypatch.setattr(qemu_img, "_run", lambda *args, **kw: runs.append(args[0]) or real(*args, **kw))
    copy = tmp_path / "copy.raw"
    shutil.copy(base, copy)
    first = qemu_img.info(copy)
    assert qemu_img.info(copy) == first and runs == ["info"]  # a cached image backing every VM: asked once
    os.truncate(copy, 2 * GIB)  # written since: asked again
    assert qemu_img.info(copy).virtual_size == 2 * GIB and runs == ["info", "info"]


def test_a_copy_is_standalone_in_the_asked_format_and_grown_to_its_size(tmp_path):
    source = tmp_path / "data.raw"
    source.write_bytes(b"\x5a" * 1024 * 1024)
    copy = qemu_img.image_copy(source=source, source_format="raw", path=tmp_path / "v.qcow2", fmt="qcow2", size_gib=2)
    assert (copy.format, copy.virtual_size, copy.backing) == ("qcow2", 2 * GIB, None)
    again = qemu_img.image_copy(source=source, source_format="raw", path=tmp_path / "v.qcow2", fmt="qcow2", size_gib=2)
    assert again == copy
    assert not list(tmp_path.glob("*.partial"))


def test_a_copy_over_another_file_is_refused(tmp_path):
    source = tmp_path / "data.raw"
    source.write_bytes(b"\0" * 1024)
    (tmp_path / "v.qcow2").write_bytes(b"not a copy")
    with pytest.raises(qemu_img.QemuImgPermanent, match="is not a qcow2 copy"):
        qemu_img.image_copy(source=source, source_format="raw", path=tmp_path / "v.qcow2", fmt="qcow2", size_gib=1)
