"""Swap disks: an instance whose type has ``swap_mib`` gets a raw disk formatted by the real ``mkswap`` in prepare,
in its domain (valid for libvirt's schema, defined on the test driver) and named by label in the cloud-init
``mounts`` so that the guest swaps on it; a type without swap gets neither."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from lxml import etree

from compute import execution, hypervisor, swap
from compute.domain import domain_xml
from compute.models import InstanceType
from tests.compute.test_contextualisation import _files, _parts, _text
from tests.compute.test_execution import _dirs, vm  # noqa: F401 - the instance and its folders, as there

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(shutil.which("mkswap", path="/usr/sbin:/sbin:/usr/bin") is None, reason="needs mkswap"),
]


def _blkid(path) -> dict[str, str]:
    found = subprocess.run(
        ["blkid", "-p", "-o", "export", str(path)], capture_output=True, text=True, check=True
    ).stdout.split()
    return dict(line.split("=", 1) for line in found)


def test_a_swap_disk_is_a_sparse_raw_file_formatted_as_labelled_swap(tmp_path):
    (tmp_path / "vm").mkdir()
    path = tmp_path / "vm" / "swap.img"
    swap.swap_disk_create(path=path, size_mib=64)
    assert path.stat().st_size == 64 * 2**20
    assert path.stat().st_blocks * 512 < 2**20  # sparse: only the header is written
    assert path.stat().st_mode & 0o777 == 0o600  # the guest's memory pages are nobody else's to read
    found = _blkid(path)
    assert (found["TYPE"], found["LABEL"]) == ("swap", swap.LABEL)
    made = path.stat().st_mtime_ns
    swap.swap_disk_create(path=path, size_mib=64)
    assert path.stat().st_mtime_ns == made
    assert [p.name for p in path.parent.iterdir()] == ["swap.img"]


def test_swap_disks_copied_from_the_template_are_labelled_swap_each_with_a_uuid_of_its_own(tmp_path):
    templates = tmp_path / "templates"
    disks = [tmp_path / f"vm{n}" / "swap.img" for n in (1, 2)]
    for path in disks:
        path.parent.mkdir()
        swap.swap_disk_create(path=path, size_mib=64, template_dir=templates)
    (template,) = templates.iterdir()  # mkswap formatted one file, once
    found = [_blkid(path) for path in disks]
    for path, info in zip(disks, found, strict=True):
        assert (info["TYPE"], info["LABEL"]) == ("swap", swap.LABEL)
        assert path.stat().st_size == 64 * 2**20
        assert path.stat().st_blocks * 512 < 2**20  # sparse, as mkswap leaves it
        assert path.stat().st_mode & 0o777 == 0o600
        assert [p.name for p in path.parent.iterdir()] == ["swap.img"]
    assert len({info["UUID"] for info in found} | {_blkid(template)["UUID"]}) == 3
    made = template.stat().st_mtime_ns
    (tmp_path / "vm3").mkdir()
    swap.swap_disk_create(path=tmp_path / "vm3" / "swap.img", size_mib=64, template_dir=templates)
    assert template.stat().st_mtime_ns == made
    swap.swap_disk_create(path=tmp_path / "vm3" / "swap.img", size_mib=32, template_dir=templates)
    assert _blkid(tmp_path / "vm3" / "swap.img")["TYPE"] == "swap"
    assert len(list(templates.iterdir())) == 2  # one template per size


def test_a_damaged_swap_template_is_formatted_again(tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "swap-64M.img").write_bytes(b"\0" * 64 * 2**20)
    (tmp_path / "vm").mkdir()
    swap.swap_disk_create(path=tmp_path / "vm" / "swap.img", size_mib=64, template_dir=templates)
    assert _blkid(tmp_path / "vm" / "swap.img")["LABEL"] == swap.LABEL
    assert _blkid(templates / "swap-64M.img")["TYPE"] == "swap"


def test_a_swap_disk_needs_a_positive_size(tmp_path):
    with pytest.raises(ValueError, match="positive size"):
        swap.swap_disk_create(path=tmp_path / "swap.img", size_mib=0)


def test_prepare_gives_an_instance_with_swap_its_swap_disk_and_the_guest_the_mount(vm, tmp_path):  # noqa: F811 - fixture
    assert vm.swap_mib == 512  # t1.micro
    assert execution.instance_prepare(vm.pk) is True
    where = execution.instance_dir(vm)
    assert (where / "swap.img").stat().st_size == 512 * 2**20
    assert _blkid(where / "swap.img")["LABEL"] == swap.LABEL
    assert (execution.templates_dir() / "swap-512M.img").exists()  # the host's template for this size

    (ours,) = [p for p in _parts(_files((where / "seed.iso").read_bytes())["user-data"]) if "ssh" in _text(p)]
    config = yaml.safe_load(_text(ours))
    assert config["mounts"] == [["LABEL=alto-swap", "none", "swap", "sw", "0", "0"]]

    xml = domain_xml(execution._spec(vm))
    disk = etree.fromstring(xml.encode()).find("devices/disk/target[@dev='vdz']/..")
    assert disk.find("source").get("file") == str((where / "swap.img").resolve())
    assert disk.find("driver").get("type") == "raw"
    domain = tmp_path / "domain.xml"
    domain.write_text(xml)
    checked = subprocess.run(["virt-xml-validate", str(domain), "domain"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr + checked.stdout
    assert execution.instance_boot(vm.pk) is True
    assert hypervisor.domain_state(vm.host.uri, f"alto-{vm.uuid}") == hypervisor.RUNNING


def test_an_instance_type_without_swap_gives_no_swap_disk_and_no_mount(vm):  # noqa: F811 - fixture
    InstanceType.objects.filter(pk=vm.instance_type_id).update(swap_mib=0)
    vm.__class__.objects.filter(pk=vm.pk).update(swap_mib=0)
    vm.refresh_from_db()
    assert execution.instance_prepare(vm.pk) is True
    where = execution.instance_dir(vm)
    assert not (where / "swap.img").exists()
    user_data = _files((where / "seed.iso").read_bytes())["user-data"]
    assert all("mounts" not in yaml.safe_load(_text(p)) for p in _parts(user_data) if "ssh" in _text(p))
    assert "vdz" not in domain_xml(execution._spec(vm))
