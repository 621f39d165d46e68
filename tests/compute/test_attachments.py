"""Volumes in instances on libvirt's test driver with real volume files: attach and detach (device names, the
volume's states, the domain's definition), failures, volumes named at the request, the volatile disk, what
terminating leaves, and reconciliation of attachments a dead worker left half done."""

from __future__ import annotations

import shutil
import uuid
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from django.utils import timezone

from compute import attachments, execution, hypervisor, tasks
from compute.domain import DiskSpec, DomainSpec, domain_xml
from compute.models import Attachment, Host, Instance
from compute.services import instance_request, instance_terminate
from core.errors import Conflict, NotFound
from core.models import AuditEntry
from storage import services as storage_services
from storage.models import Volume
from tests.compute.test_hypervisor import NODE
from tests.storage.conftest import cache_settings, disk_image, publish  # noqa: F401 - a signed disk image

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
]
MARKER = b"ALTO-PERSISTENT-DATA"


@pytest.fixture(autouse=True)
def _dirs(settings, tmp_path, volume_settings):
    settings.INSTANCE_DIR = tmp_path / "instances"
    settings.QUARANTINE_DIR = tmp_path / "quarantine"
    yield
    hypervisor.disconnect_all()


@pytest.fixture
def registered(keyring):  # noqa: F811 - the marketplace fixture, repeatable: the image and the disk image share a key
    from marketplace import services

    def register(user, name: str):
        try:
            return services.pgp_key_register(actor=user, armored=keyring[name].armored)
        except Conflict:
            return None

    return register


@pytest.fixture
def host(tmp_path) -> Host:
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    return Host.objects.create(name="h1", uri=f"test://{node}", vcpus=4, ram_mib=8192)


@pytest.fixture
def vm(host, types, instance_on):
    """``vm(name, state="running")``: an instance on ``host`` whose domain is defined (and running when it is)."""

    def make(name: str = "vm", *, state: str = "running") -> Instance:
        instance = instance_on(host, types["t1.micro"], state=state, name=name)
        spec = DomainSpec(
            name=f"alto-{instance.uuid}",
            uuid=instance.uuid,
            vcpus=1,
            ram_mib=512,
            console_log="/var/log/alto/console.log",
            disks=(DiskSpec(target="vda", path=f"/var/lib/alto/{instance.uuid}/root.qcow2"),),
        )
        hypervisor.domain_define(host.uri, domain_xml(spec))
        if state == "running":
            hypervisor.domain_start(host.uri, spec.name)
        return instance

    return make


@pytest.fixture
def volume(owner, project):
    """``volume(name)``: an ``available`` persistent 1 GiB volume of ``project`` on the file backend (a real qcow2)."""

    def make(name: str = "data") -> Volume:
        made = storage_services.volume_create(actor=owner, project=project, name=name, size_gib=1)
        return storage_services.volume_provision(volume_id=made.pk)

    return make


def _disks(instance: Instance) -> dict[str, str]:
    return {d.target: d.source for d in hypervisor.domain_disks(instance.host.uri, f"alto-{instance.uuid}")}


def _state(volume: Volume) -> str:
    volume.refresh_from_db()
    return volume.state


def _attach(owner, instance: Instance, volume: Volume, capture) -> Attachment:
    with capture(execute=True):
        attachment = attachments.instance_attach(actor=owner, instance=instance, volume_id=str(volume.uuid))
    assert attachments.volume_attach_apply(attachment.pk) is True
    attachment.refresh_from_db()
    return attachment


def test_an_attached_volume_is_in_use_on_the_first_free_device_of_the_domain(
    owner, vm, volume, enqueued, django_capture_on_commit_callbacks
):
    instance, data = vm(), volume()
    with django_capture_on_commit_callbacks(execute=True):
        attachment = attachments.instance_attach(actor=owner, instance=instance, volume_id=str(data.uuid))
    assert (attachment.device, attachment.state, _state(data)) == ("vdb", "attaching", "attaching")
    assert enqueued[-1] == (attachments.ATTACH, attachment.pk, "host.h1")

    assert attachments.volume_attach_apply(attachment.pk) is True
    attachment.refresh_from_db()
    assert (attachment.state, _state(data)) == ("attached", "in-use")
    assert _disks(instance)["vdb"] == data.path
    assert attachments.volume_attach_apply(attachment.pk) is False  # run again: nothing to do
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"compute.volume.attaching", "compute.volume.attached", "storage.volume.attached"} <= actions


def test_devices_are_picked_free_and_a_detached_ones_name_is_reused(
    owner, vm, volume, django_capture_on_commit_callbacks
):
    instance = vm()
    first, second = volume("one"), volume("two")
    assert _attach(owner, instance, first, django_capture_on_commit_callbacks).device == "vdb"
    assert _attach(owner, instance, second, django_capture_on_commit_callbacks).device == "vdc"
    with django_capture_on_commit_callbacks(execute=True):
        detaching = attachments.instance_detach(actor=owner, instance=instance, volume_id=str(first.uuid))
    assert (detaching.state, _state(first)) == ("detaching", "detaching")
    assert attachments.volume_detach_apply(detaching.pk) is True
    assert not Attachment.objects.filter(pk=detaching.pk).exists()
    assert _state(first) == "available"
    assert set(_disks(instance)) == {"vda", "vdc"}
    third = volume("three")
    assert _attach(owner, instance, third, django_capture_on_commit_callbacks).device == "vdb"


def test_a_stopped_instance_gets_the_volume_in_its_definition(owner, vm, volume, django_capture_on_commit_callbacks):
    instance, data = vm(state="stopped"), volume()
    _attach(owner, instance, data, django_capture_on_commit_callbacks)
    assert _state(data) == "in-use"
    assert _disks(instance)["vdb"] == data.path
    assert hypervisor.domain_state(instance.host.uri, f"alto-{instance.uuid}") == hypervisor.SHUT_OFF


def test_a_volume_in_use_is_not_attached_to_a_second_instance(owner, vm, volume, django_capture_on_commit_callbacks):
    first, second, data = vm("one"), vm("two"), volume()
    _attach(owner, first, data, django_capture_on_commit_callbacks)
    with pytest.raises(Conflict) as refused:
        attachments.instance_attach(actor=owner, instance=second, volume_id=str(data.uuid))
    assert refused.value.code == "volume-unavailable"
    assert not Attachment.objects.filter(instance=second).exists()


@pytest.mark.parametrize("state", ["booting", "stopping", "terminating", "error"])
def test_an_instance_in_a_step_takes_no_volume(owner, vm, volume, state):
    instance, data = vm(state="running"), volume()
    Instance.objects.filter(pk=instance.pk).update(state=state)
    with pytest.raises(Conflict) as refused:
        attachments.instance_attach(actor=owner, instance=instance, volume_id=str(data.uuid))
    assert refused.value.code == "instance-state"
    assert _state(data) == "available"


def test_another_projects_volume_and_a_malformed_id_are_not_found(owner, outsider, vm, volume, staff):
    from accounts.services import project_create

    instance = vm()
    elsewhere = project_create(actor=staff, name="elsewhere", manager=outsider)
    theirs = storage_services.volume_create(actor=outsider, project=elsewhere, name="theirs", size_gib=1)
    for volume_id in (str(theirs.uuid), str(uuid.uuid4()), "../../etc/passwd"):
        with pytest.raises(NotFound):
            attachments.instance_attach(actor=owner, instance=instance, volume_id=volume_id)


def test_detaching_a_volume_the_instance_does_not_hold_is_a_conflict(owner, vm, volume):
    instance, data = vm(), volume()
    with pytest.raises(Conflict) as refused:
        attachments.instance_detach(actor=owner, instance=instance, volume_id=str(data.uuid))
    assert refused.value.code == "volume-not-attached"
    assert _state(data) == "available"


def test_a_hot_plug_that_fails_returns_the_volume_available_with_the_reason(
    owner, vm, volume, django_capture_on_commit_callbacks
):
    instance, data = vm(), volume()
    with django_capture_on_commit_callbacks(execute=True):
        attachment = attachments.instance_attach(actor=owner, instance=instance, volume_id=str(data.uuid))
    # The domain vanished under the worker (libvirt answers "no such domain": a permanent failure).
    hypervisor.domain_destroy(instance.host.uri, f"alto-{instance.uuid}")
    hypervisor.domain_undefine(instance.host.uri, f"alto-{instance.uuid}")
    assert tasks.volume_attach(attachment.pk) is False
    assert not Attachment.objects.filter(pk=attachment.pk).exists()
    assert _state(data) == "available"
    assert "the hot-plug failed" in data.state_message and f"alto-{instance.uuid}" in data.state_message
    assert AuditEntry.objects.filter(action="compute.volume.attach_failed").exists()


def test_volumes_named_in_the_request_and_the_volatile_disk_are_in_the_domain_from_boot(
    owner, project, image, types, networks, host, volume, django_capture_on_commit_callbacks, monkeypatch, tmp_path
):
    from types import SimpleNamespace

    from storage.backends import qemu_img

    base = tmp_path / "cached.raw"
    qemu_img.image_create(path=base, size_gib=1, fmt="raw")
    monkeypatch.setattr(execution, "image_cache_ensure", lambda *, identifier: SimpleNamespace(path=str(base)))
    data = volume()
    with django_capture_on_commit_callbacks(execute=True):
        instance = instance_request(
            actor=owner,
            project=project,
            image=image,
            instance_type=types["t1.micro"],
            network="private",
            ssh_keys=[],
            user_data="",
            volatile_gib=2,
            name="vm1",
            volumes=[str(data.uuid)],
        )
    by_device = {a.device: a for a in instance.attachments.all()}
    volatile = Volume.objects.get(kind="volatile")
    assert {d: (a.volume_uuid, a.state) for d, a in by_device.items()} == {
        "vdb": (data.uuid, "attaching"),
        "vdc": (volatile.uuid, "attached"),
    }
    assert (_state(data), _state(volatile)) == ("attaching", "creating")
    assert execution.instance_prepare(instance.pk) and execution.instance_boot(instance.pk)
    disks = _disks(instance)
    assert (disks["vdb"], disks["vdc"]) == (data.path, volatile.path)
    assert (_state(data), _state(volatile)) == ("in-use", "in-use")
    assert {a.state for a in instance.attachments.all()} == {"attached"}


def test_a_request_naming_an_unavailable_volume_changes_nothing(
    owner, project, image, types, networks, host, volume, vm, django_capture_on_commit_callbacks
):
    data = volume()
    _attach(owner, vm("holder"), data, django_capture_on_commit_callbacks)
    before = Instance.objects.count()
    for volumes, error in (([str(data.uuid)], Conflict), ([str(uuid.uuid4())], NotFound)):
        with pytest.raises(error):
            instance_request(
                actor=owner,
                project=project,
                image=image,
                instance_type=types["t1.micro"],
                network="private",
                ssh_keys=[],
                user_data="",
                volatile_gib=1,
                name="vm2",
                volumes=volumes,
            )
    assert Instance.objects.count() == before
    assert not Volume.objects.filter(kind="volatile").exists()


def test_terminating_leaves_persistent_volumes_available_with_their_data_and_destroys_the_volatile_disk(
    owner, vm, volume, project, enqueued, django_capture_on_commit_callbacks
):
    instance, data = vm(), volume()
    _attach(owner, instance, data, django_capture_on_commit_callbacks)
    volatile = storage_services.volume_create_volatile(project=project, size_gib=1, holder=str(instance.uuid))
    storage_services.volume_provision(volume_id=volatile.pk)
    Attachment.objects.create(instance=instance, volume_uuid=volatile.uuid, device="vdc", state="attached")
    # The guest wrote to its persistent disk (raw bytes at the start of the qcow2's data are enough to tell).
    with open(data.path, "r+b") as disk:
        disk.seek(0, 2)
        disk.write(MARKER)
    size = Path(data.path).stat().st_size

    with django_capture_on_commit_callbacks(execute=True):
        instance_terminate(actor=owner, instance=instance)
    with django_capture_on_commit_callbacks(execute=True):
        assert execution.instance_teardown(instance.pk) is True
    assert not Attachment.objects.filter(instance=instance).exists()
    assert _state(data) == "available"
    assert Path(data.path).stat().st_size == size and Path(data.path).read_bytes().endswith(MARKER)
    assert _state(volatile) == "deleting"
    assert ("storage.volume_delete", volatile.pk, "default") in enqueued
    storage_services.volume_destroy(volume_id=volatile.pk)
    assert _state(volatile) == "deleted" and not Path(volatile.path).exists()


def test_terminating_an_instance_that_never_ran_releases_its_volumes(
    owner, project, image, types, networks, host, volume, django_capture_on_commit_callbacks
):
    data = volume()
    instance = instance_request(
        actor=owner,
        project=project,
        image=image,
        instance_type=types["t1.micro"],
        network="private",
        ssh_keys=[],
        user_data="",
        volatile_gib=1,
        name="vm1",
        volumes=[str(data.uuid)],
    )
    instance_terminate(actor=owner, instance=instance)
    assert _state(data) == "available"
    assert Volume.objects.get(kind="volatile").state == "deleting"


def _age(attachment: Attachment, minutes: int = 31) -> None:
    Attachment.objects.filter(pk=attachment.pk).update(updated=timezone.now() - timedelta(minutes=minutes))


def test_reconciliation_settles_an_attach_left_half_done_from_the_domain(
    owner, vm, volume, host, django_capture_on_commit_callbacks
):
    instance = vm()
    plugged, lost = volume("plugged"), volume("lost")
    with django_capture_on_commit_callbacks(execute=True):
        done = attachments.instance_attach(actor=owner, instance=instance, volume_id=str(plugged.uuid))
        never = attachments.instance_attach(actor=owner, instance=instance, volume_id=str(lost.uuid))
    # A worker plugged the first disk and died before recording it; the second's message was lost.
    disk = attachments.attachment_prepare(done)
    from compute.domain import disk_xml

    hypervisor.domain_disk_attach(host.uri, f"alto-{instance.uuid}", disk_xml(disk))
    assert attachments.attachments_settle(host_id=host.pk) == []  # not past the deadline yet
    _age(done)
    _age(never)
    settled = attachments.attachments_settle(host_id=host.pk)
    assert [(s.found, s.outcome) for s in settled] == [("attaching", "attached"), ("attaching", "gone")]
    assert (_state(plugged), _state(lost)) == ("in-use", "available")
    assert "did not finish" in lost.state_message
    assert list(Attachment.objects.filter(instance=instance).values_list("device", "state")) == [("vdb", "attached")]


def test_reconciliation_settles_a_detach_left_half_done_from_the_domain(
    owner, vm, volume, host, django_capture_on_commit_callbacks
):
    instance = vm()
    gone, kept = volume("gone"), volume("kept")
    first = _attach(owner, instance, gone, django_capture_on_commit_callbacks)
    second = _attach(owner, instance, kept, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        attachments.instance_detach(actor=owner, instance=instance, volume_id=str(gone.uuid))
        attachments.instance_detach(actor=owner, instance=instance, volume_id=str(kept.uuid))
    hypervisor.domain_disk_detach(host.uri, f"alto-{instance.uuid}", target="vdb", source=gone.path)
    _age(first)
    _age(second)
    settled = attachments.attachments_settle(host_id=host.pk)
    assert [(s.found, s.outcome) for s in settled] == [("detaching", "gone"), ("detaching", "attached")]
    assert (_state(gone), _state(kept)) == ("available", "in-use")
    assert list(Attachment.objects.filter(instance=instance).values_list("device", "state")) == [("vdc", "attached")]


@pytest.mark.django_db(transaction=True)  # the image is cached with no transaction open
def test_a_static_volume_goes_read_only_into_many_instances_and_is_available_when_the_last_lets_go(
    owner,
    project,
    vm,
    disk_image,  # noqa: F811 - the fixture imported above
    django_capture_on_commit_callbacks,
):
    from marketplace.models import Image

    made = storage_services.volume_create(
        actor=owner, project=project, name="dataset", size_gib=None, kind="static",
        image=Image.objects.get(identifier=disk_image),
    )  # fmt: skip
    dataset = storage_services.volume_provision(volume_id=made.pk)
    first, second = vm("one"), vm("two")
    for instance in (first, second):
        attachment = _attach(owner, instance, dataset, django_capture_on_commit_callbacks)
        assert (attachment.read_only, attachment.state) == (True, "attached")
        domain = hypervisor.domain_disks(instance.host.uri, f"alto-{instance.uuid}")
        assert {d.target: d.source for d in domain}["vdb"] == dataset.path
    assert _state(dataset) == "in-use"
    for instance, after in ((first, "in-use"), (second, "available")):
        with django_capture_on_commit_callbacks(execute=True):
            detaching = attachments.instance_detach(actor=owner, instance=instance, volume_id=str(dataset.uuid))
        assert attachments.volume_detach_apply(detaching.pk) is True
        assert _state(dataset) == after


def test_a_guest_that_keeps_the_disk_past_the_polling_leaves_it_attached_with_the_reason(
    owner, vm, volume, monkeypatch, django_capture_on_commit_callbacks
):
    instance, data = vm(), volume()
    attachment = _attach(owner, instance, data, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        attachments.instance_detach(actor=owner, instance=instance, volume_id=str(data.uuid))
    # The test driver always lets go; a real guest without ACPI hot-plug never does. Only our adapter is faked.
    monkeypatch.setattr(
        hypervisor, "domain_disk_detach", mock.create_autospec(hypervisor.domain_disk_detach, return_value=False)
    )
    assert tasks.volume_detach.apply(args=[attachment.pk], retries=tasks.POLL_TIMES).get() is False
    attachment.refresh_from_db()
    assert (attachment.state, _state(data)) == ("attached", "in-use")
    assert "did not release the disk" in attachment.state_message and "did not release" in data.state_message
    assert _disks(instance)["vdb"] == data.path
    assert AuditEntry.objects.filter(action="compute.volume.detach_failed").exists()
