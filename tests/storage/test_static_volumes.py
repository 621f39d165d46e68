"""Static volumes: read-only copies of signed Marketplace ``disk`` images, made from the verified image cache,
attachable to many VMs, and only while the site policy allows the image (at request, in the worker, at attach)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from core.errors import ApplicationError, Conflict, PermissionDenied
from marketplace.policy import PolicyRules
from marketplace.policy.services import policy_change
from storage import selectors, services, tasks
from storage.backends import qemu_img
from storage.models import Volume, VolumeHolder

# Making a static volume downloads its image, which runs outside any transaction: real commits here.
pytestmark = pytest.mark.django_db(transaction=True)

MIB = 1024**2
VM1, VM2 = "vm-0001", "vm-0002"


def reads_pattern(url: str, fmt: str, *, offset: str = "1M", length: str = "1M") -> bool:
    done = subprocess.run(
        ["qemu-io", "-r", "-f", fmt, "-c", f"read -P 0x5a {offset} {length}", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout + done.stderr


def deny(identifier: str) -> None:
    policy_change(actor=None, rules=PolicyRules.from_json({"mode": "enforce", "images_deny": [identifier]}))


@pytest.fixture
def make_static(disk_image, volume_settings, project, owner):
    from marketplace.models import Image

    def make(*, provision: bool = True, **fields) -> Volume:
        image = Image.objects.get(identifier=disk_image)
        volume = services.volume_create(
            actor=owner, project=project, name="dataset", size_gib=fields.pop("size_gib", None), kind="static",
            image=image, **fields,
        )  # fmt: skip
        return services.volume_provision(volume_id=volume.pk) if provision else volume

    return make


def test_a_static_volume_is_a_copy_of_its_disk_image_made_from_the_cache(make_static, disk_image, cache_settings):
    volume = make_static()

    assert (volume.state, volume.kind, volume.size_gib, volume.image_identifier) == (
        "available", "static", 1, disk_image,
    )  # fmt: skip
    assert (cache_settings.IMAGE_CACHE_DIR / disk_image).exists()  # downloaded and checked first
    info = qemu_img.info(Path(volume.path))
    assert (info.format, info.virtual_size, info.backing) == ("qcow2", 1024**3, None)  # a copy, no overlay
    assert reads_pattern(volume.path, "qcow2")
    assert reads_pattern(volume.path, "qcow2", offset="0", length="1M") is False


def test_a_static_volume_attaches_read_only_to_many_vms(make_static, owner, project):
    volume = make_static()
    uid = str(volume.uuid)

    for holder in (VM1, VM2):
        reserved, source = services.volume_attach_begin(actor=owner, project=project, volume_id=uid, holder=holder)
        assert source.read_only is True
        assert reserved.state == "in-use"
        services.volume_attach_end(volume_id=uid, holder=holder, ok=True)
    assert sorted(selectors.volume_holders(Volume.objects.get(pk=volume.pk))) == [VM1, VM2]

    services.volume_detach_begin(actor=owner, project=project, volume_id=uid, holder=VM1)
    assert services.volume_detach_end(volume_id=uid, holder=VM1, ok=True).state == "in-use"  # VM2 holds it
    services.volumes_release(holder=VM2)
    assert Volume.objects.get(pk=volume.pk).state == "available"
    assert not VolumeHolder.objects.exists()


def test_a_failed_attach_of_a_shared_static_volume_keeps_it_in_use_for_the_others(make_static, owner, project):
    volume = make_static()
    uid = str(volume.uuid)
    services.volume_attach_begin(actor=owner, project=project, volume_id=uid, holder=VM1)
    services.volume_attach_end(volume_id=uid, holder=VM1, ok=True)
    services.volume_attach_begin(actor=owner, project=project, volume_id=uid, holder=VM2)

    assert services.volume_attach_end(volume_id=uid, holder=VM2, ok=False, message="boom").state == "in-use"
    assert selectors.volume_holders(Volume.objects.get(pk=volume.pk)) == [VM1]
    with pytest.raises(Conflict) as refused:
        services.volume_attach_begin(actor=owner, project=project, volume_id=uid, holder=VM1)
    assert refused.value.code == "volume-unavailable"  # already attached to VM1


def test_a_static_volume_of_an_image_the_policy_denies_is_refused_at_request(make_static, disk_image):
    deny(disk_image)
    with pytest.raises(PermissionDenied) as refused:
        make_static(provision=False)
    assert refused.value.code == "policy-denied"
    assert "images_deny" in str(refused.value.extra["rules"])
    assert not Volume.objects.exists()


def test_the_policy_is_checked_again_in_the_worker(make_static, disk_image):
    volume = make_static(provision=False)
    deny(disk_image)

    assert tasks.volume_create(volume_id=volume.pk)["state"] == "error"

    volume.refresh_from_db()
    assert volume.state == "error"
    assert "policy" in volume.state_message
    assert not Path(volume.path).exists()


def test_the_policy_is_checked_again_at_attach(make_static, disk_image, owner, project):
    volume = make_static()
    deny(disk_image)

    with pytest.raises(PermissionDenied) as refused:
        services.volume_attach_begin(actor=owner, project=project, volume_id=str(volume.uuid), holder=VM1)

    assert refused.value.code == "policy-denied"
    assert Volume.objects.get(pk=volume.pk).state == "available"
    assert not VolumeHolder.objects.exists()


def test_only_disk_images_make_static_volumes(publish, cache_settings, volume_settings, project, owner, tmp_path):
    from marketplace.models import Image

    path = tmp_path / "images" / "machine.raw"
    path.write_bytes(b"machine")
    machine = Image.objects.get(identifier=publish(b"machine", locations=[path.as_uri()], kind="machine"))
    with pytest.raises(ApplicationError) as refused:
        services.volume_create(actor=owner, project=project, name="x", size_gib=None, kind="static", image=machine)
    assert refused.value.code == "image-not-disk"


def test_a_static_volume_may_be_larger_than_its_image(make_static):
    volume = make_static(size_gib=2)
    assert volume.size_gib == 2
    assert qemu_img.info(Path(volume.path)).virtual_size == 2 * 1024**3
    assert reads_pattern(volume.path, "qcow2")


def test_a_static_volume_smaller_than_its_image_is_refused(make_static, disk_image):
    from marketplace.models import Image

    Image.objects.filter(identifier=disk_image).update(bytes=3 * 1024**3 + 1)  # as a 3 GiB dataset would be
    with pytest.raises(ApplicationError, match="needs 4 GiB; 3 GiB is too small") as refused:
        make_static(provision=False, size_gib=3)
    assert refused.value.code == "volume-size"


def test_a_persistent_volume_names_no_image(make_static, disk_image, project, owner):
    from marketplace.models import Image

    with pytest.raises(ApplicationError) as refused:
        services.volume_create(
            actor=owner, project=project, name="x", size_gib=1, image=Image.objects.get(identifier=disk_image)
        )
    assert refused.value.code == "image-not-allowed"


def test_a_qcow2_disk_image_that_names_a_backing_file_is_not_copied(
    publish, cache_settings, volume_settings, project, owner, tmp_path
):
    """The attack: a signed qcow2 'dataset' whose backing file is a secret on the worker; a copy would carry the
    secret into a volume its author can attach."""
    from marketplace.models import Image

    secret = tmp_path / "worker-secret"
    secret.write_bytes(b"the worker's private key" * 100)
    hostile = tmp_path / "images" / "hostile.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw", str(hostile)], check=True
    )
    content = hostile.read_bytes()
    image = Image.objects.get(identifier=publish(content, locations=[hostile.as_uri()], kind="disk", format="qcow2"))
    volume = services.volume_create(actor=owner, project=project, name="x", size_gib=None, kind="static", image=image)

    assert tasks.volume_create(volume_id=volume.pk)["state"] == "error"

    volume.refresh_from_db()
    assert "names a backing file" in volume.state_message
    assert not Path(volume.path).exists()


def test_a_static_volume_on_iscsi_is_a_read_only_lun(make_static, tgtd):
    volume = make_static(backend="iscsi")
    url = f"iscsi://{tgtd.portal}/{volume.iqn}/1"

    assert volume.format == "raw"
    assert reads_pattern(url, "raw")
    written = subprocess.run(
        ["qemu-io", "-f", "raw", "-c", "write -P 0x11 1M 4k", url], capture_output=True, text=True, timeout=60
    )
    assert written.returncode != 0 or "wrote" not in written.stdout
    assert reads_pattern(url, "raw")


def test_a_qcow2_disk_image_larger_inside_than_asked_for_is_refused_naming_the_size(
    publish, cache_settings, volume_settings, project, owner, tmp_path
):
    """A 3 GiB disk in a small qcow2 file: its entry's bytes (the file's) say 1 GiB, its copy would be 3 GiB."""
    from marketplace.models import Image

    sparse = tmp_path / "images" / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(sparse), "3G"], check=True)
    content = sparse.read_bytes()
    image = Image.objects.get(identifier=publish(content, locations=[sparse.as_uri()], kind="disk", format="qcow2"))
    small = services.volume_create(actor=owner, project=project, name="s", size_gib=None, kind="static", image=image)
    assert small.size_gib == 1

    assert tasks.volume_create(volume_id=small.pk)["state"] == "error"
    small.refresh_from_db()
    assert "the image's disk is 3 GiB, larger than the 1 GiB asked for; ask for at least 3" in small.state_message

    enough = services.volume_create(actor=owner, project=project, name="e", size_gib=3, kind="static", image=image)
    assert services.volume_provision(volume_id=enough.pk).state == "available"
    assert qemu_img.info(Path(enough.path)).virtual_size == 3 * 1024**3


def test_a_static_volume_records_the_entries_that_allowed_its_image_and_is_listed_with_what_runs_from_it(
    make_static, disk_image
):
    from marketplace import usage
    from marketplace.models import Image

    volume = make_static()

    image = Image.objects.get(identifier=disk_image)
    entry = image.entries.get()
    assert volume.allowed_by == [{"endorser": entry.endorser.email, "created": entry.created.isoformat()}]
    [use] = usage.image_uses(image.pk)
    assert (use.kind, use.id, use.owner, use.project) == ("volume", str(volume.uuid), "owner", "climate")
    assert usage.image_use_counts([image.pk]) == {image.pk: 1}
