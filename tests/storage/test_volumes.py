"""Volumes on the file backend with the real qemu-img: their lifecycle (DESIGN §5), the holds compute takes
through the contract's services, quotas, and the audit trail."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from accounts.quotas import QuotaExceeded, quota_set, quota_usage
from accounts.services import project_create
from core.errors import ApplicationError, Conflict, NotFound
from core.models import AuditEntry
from storage import selectors, services, tasks
from storage.backends import qemu_img
from storage.models import Volume, VolumeHolder

GIB = 1024**3
VM1 = "7d3f7e0c-0000-4000-8000-000000000001"
VM2 = "7d3f7e0c-0000-4000-8000-000000000002"


def qemu_io(path: str, command: str, fmt: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-io", "-f", fmt, "-c", command, path], capture_output=True, text=True, timeout=60)


def write_marker(volume: Volume) -> None:
    done = qemu_io(volume.path, "write -P 0x5a 1M 64k", volume.format)
    assert done.returncode == 0, done.stderr


def has_marker(volume: Volume) -> bool:
    done = qemu_io(volume.path, "read -P 0x5a 1M 64k", volume.format)
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout + done.stderr


@pytest.fixture
def make_volume(volume_settings, project, owner):
    def make(size_gib: int = 1, *, provision: bool = True, actor=None, **fields) -> Volume:
        volume = services.volume_create(
            actor=actor or owner, project=project, name=fields.pop("name", "data"), size_gib=size_gib, **fields
        )
        return services.volume_provision(volume_id=volume.pk) if provision else volume

    return make


def attached(volume: Volume, holder: str = VM1) -> Volume:
    services.volume_attach_begin(
        actor=volume.created_by, project=volume.project, volume_id=str(volume.uuid), holder=holder
    )
    return services.volume_attach_end(volume_id=str(volume.uuid), holder=holder, ok=True)


# --- create and delete ------------------------------------------------------------------------------------


def test_a_requested_volume_is_creating_until_the_worker_makes_its_qcow2_file(
    make_volume, volume_settings, django_capture_on_commit_callbacks, volume_tasks_sent
):
    with django_capture_on_commit_callbacks(execute=True):
        volume = make_volume(3, provision=False)
    assert volume.state == "creating" and volume_tasks_sent == [("create", volume.pk)]
    assert not Path(volume.path).exists()

    made = tasks.volume_create(volume_id=volume.pk)

    assert made == {"volume": volume.pk, "state": "available"}
    volume.refresh_from_db()
    assert volume.path == str(volume_settings.STORAGE_FILE_DIR / f"{volume.uuid}.qcow2")
    info = qemu_img.info(Path(volume.path))
    assert (info.format, info.virtual_size, info.backing) == ("qcow2", 3 * GIB, None)


def test_the_file_backend_makes_raw_files_when_the_site_says_so(make_volume, volume_settings):
    volume_settings.STORAGE_FILE_FORMAT = "raw"
    volume = make_volume(1)
    assert volume.format == "raw" and volume.path.endswith(".raw")
    assert qemu_img.info(Path(volume.path)).format == "raw"


def test_making_a_volume_twice_keeps_its_data(make_volume):
    volume = make_volume(1)
    write_marker(volume)
    Volume.objects.filter(pk=volume.pk).update(state="creating")  # as if the task's message came back

    services.volume_provision(volume_id=volume.pk)

    assert has_marker(volume)


def test_deleting_a_volume_removes_its_file_and_gives_its_quota_back(make_volume, owner, project):
    volume = make_volume(5)
    assert quota_usage(project=project)["volume_gib"].used == 5

    deleting = services.volume_delete(actor=owner, volume=volume)
    assert deleting.state == "deleting"
    assert tasks.volume_delete(volume_id=volume.pk) == {"volume": volume.pk, "state": "deleted"}

    assert not Path(volume.path).exists()
    assert quota_usage(project=project)["volume_gib"].used == 0
    assert quota_usage(project=project)["volumes"].used == 0
    assert tasks.volume_delete(volume_id=volume.pk) == {"volume": volume.pk, "state": "deleted"}  # again: no-op


def test_deleting_a_volume_being_deleted_changes_nothing(make_volume, owner):
    volume = make_volume()
    services.volume_delete(actor=owner, volume=volume)
    again = services.volume_delete(actor=owner, volume=volume)
    assert again.state == "deleting"
    assert AuditEntry.objects.filter(action="storage.volume.deleting").count() == 1


def test_a_volume_deleted_while_it_was_being_made_leaves_no_file(make_volume, owner):
    volume = make_volume(provision=False)
    services.volume_delete(actor=owner, volume=volume)
    services.volume_destroy(volume_id=volume.pk)  # the delete ran first: nothing there yet
    Volume.objects.filter(pk=volume.pk).update(state="creating")  # the create task's view a moment earlier
    services.volume_delete(actor=owner, volume=Volume.objects.get(pk=volume.pk))

    services.volume_provision(volume_id=volume.pk)

    assert not Path(volume.path).exists()
    assert Volume.objects.get(pk=volume.pk).state == "deleting"


def test_deleting_a_held_volume_is_refused_and_its_data_stays(make_volume, owner):
    volume = attached(make_volume())
    write_marker(volume)

    with pytest.raises(Conflict) as refused:
        services.volume_delete(actor=owner, volume=volume)

    assert refused.value.code == "volume-in-use"
    assert VM1 in refused.value.message
    volume.refresh_from_db()
    assert volume.state == "in-use"
    assert has_marker(volume)
    assert not AuditEntry.objects.filter(action="storage.volume.deleting").exists()


@pytest.mark.parametrize("state", ["attaching", "detaching"])
def test_a_volume_being_attached_or_detached_cannot_be_deleted(make_volume, owner, state):
    volume = make_volume()
    services.volume_attach_begin(actor=owner, project=volume.project, volume_id=str(volume.uuid), holder=VM1)
    if state == "detaching":
        services.volume_attach_end(volume_id=str(volume.uuid), holder=VM1, ok=True)
        services.volume_detach_begin(actor=owner, project=volume.project, volume_id=str(volume.uuid), holder=VM1)
    with pytest.raises(Conflict, match=state):
        services.volume_delete(actor=owner, volume=volume)
    assert Path(volume.path).exists()


def test_a_volume_that_could_not_be_made_is_in_error_with_the_reason_and_can_be_deleted(make_volume, owner):
    volume = make_volume(provision=False)
    Path(volume.path).parent.mkdir(parents=True, exist_ok=True)
    Path(volume.path).write_bytes(b"someone else's file")  # qemu-img refuses to overwrite it

    assert tasks.volume_create(volume_id=volume.pk)["state"] == "error"

    volume.refresh_from_db()
    assert volume.state == "error"
    assert "exists and is not an empty qcow2 image" in volume.state_message
    assert services.volume_delete(actor=owner, volume=volume).state == "deleting"


def test_bad_input_is_refused_naming_the_problem_and_writes_nothing(make_volume, volume_settings):
    cases = [
        ({"size_gib": 0}, "volume-size"),
        ({"size_gib": volume_settings.STORAGE_VOLUME_MAX_GIB + 1}, "volume-size"),
        ({"name": ""}, "volume-name"),
        ({"name": "x" * 101}, "volume-name"),
        ({"name": "bad\x00name"}, "volume-name"),
        ({"kind": "volatile"}, "volume-kind"),
        ({"kind": "static"}, "image-required"),
        ({"backend": "iscsi"}, "backend-unknown"),  # this site offers the file backend only
    ]
    for fields, code in cases:
        size = fields.pop("size_gib", 1)
        with pytest.raises(ApplicationError) as refused:
            make_volume(size, provision=False, **fields)
        assert refused.value.code == code, fields
    assert not Volume.objects.exists()


def test_a_user_cannot_make_volumes_in_a_project_they_are_not_in(make_volume, outsider):
    with pytest.raises(NotFound):
        make_volume(actor=outsider, provision=False)
    assert not Volume.objects.exists()


# --- quotas -----------------------------------------------------------------------------------------------


def test_volume_gib_beyond_the_quota_is_refused_with_the_numbers(make_volume, project, staff):
    quota_set(actor=staff, project=project, limits={"volume_gib": 10})
    make_volume(6, provision=False)

    with pytest.raises(QuotaExceeded) as refused:
        make_volume(5, provision=False)

    assert refused.value.message == "Volume GiB quota exceeded (quota 10, used 6, requested 5)"
    assert Volume.objects.count() == 1
    make_volume(4, provision=False)


def test_volumes_beyond_the_count_quota_are_refused(make_volume, project, staff):
    quota_set(actor=staff, project=project, limits={"volumes": 2})
    make_volume(provision=False)
    make_volume(provision=False)

    with pytest.raises(QuotaExceeded, match=r"Volume quota exceeded \(quota 2, used 2, requested 1\)"):
        make_volume(provision=False)


def test_volumes_in_error_still_count_until_deleted(make_volume, project, staff, owner):
    quota_set(actor=staff, project=project, limits={"volumes": 1})
    volume = make_volume(provision=False)
    services.volume_fail(volume_id=volume.pk, message="disk full")
    with pytest.raises(QuotaExceeded):
        make_volume(provision=False)
    services.volume_delete(actor=owner, volume=Volume.objects.get(pk=volume.pk))
    services.volume_destroy(volume_id=volume.pk)
    make_volume(provision=False)


def test_a_volatile_disk_counts_in_gib_not_in_volumes(volume_settings, project, staff):
    quota_set(actor=staff, project=project, limits={"volume_gib": 10, "volumes": 0})
    services.volume_create_volatile(project=project, size_gib=8, holder=VM1)

    usage = quota_usage(project=project)
    assert (usage["volume_gib"].used, usage["volumes"].used) == (8, 0)
    with pytest.raises(QuotaExceeded, match="Volume GiB"):
        services.volume_create_volatile(project=project, size_gib=3, holder=VM2)


# --- holds: attach and detach (compute's side of the contract) ------------------------------------------


def test_a_persistent_volume_goes_attaching_in_use_detaching_available(make_volume, owner, project):
    volume = make_volume()
    uid = str(volume.uuid)

    reserved, source = services.volume_attach_begin(actor=owner, project=project, volume_id=uid, holder=VM1)
    assert reserved.state == "attaching"
    assert (source.backend, source.path, source.format, source.read_only) == ("file", volume.path, "qcow2", False)
    assert services.volume_attach_end(volume_id=uid, holder=VM1, ok=True).state == "in-use"
    assert selectors.volume_holders(Volume.objects.get(pk=volume.pk)) == [VM1]
    assert [v.pk for v in selectors.volumes_held_by(VM1)] == [volume.pk]

    detaching, _ = services.volume_detach_begin(actor=owner, project=project, volume_id=uid, holder=VM1)
    assert detaching.state == "detaching"
    assert services.volume_detach_end(volume_id=uid, holder=VM1, ok=True).state == "available"
    assert selectors.volumes_held_by(VM1) == []
    actions = list(
        AuditEntry.objects.filter(content_type__model="volume", object_id=str(volume.pk))
        .order_by("pk")
        .values_list("action", "actor__username")
    )
    assert actions[-4:] == [
        ("storage.volume.attaching", "owner"),
        ("storage.volume.attached", None),
        ("storage.volume.detaching", "owner"),
        ("storage.volume.detached", None),
    ]


def test_a_persistent_volume_is_held_by_one_vm_at_a_time(make_volume, owner, project):
    volume = attached(make_volume())
    with pytest.raises(Conflict) as refused:
        services.volume_attach_begin(actor=owner, project=project, volume_id=str(volume.uuid), holder=VM2)
    assert refused.value.code == "volume-unavailable"
    assert selectors.volume_holders(volume) == [VM1]


def test_a_failed_hot_plug_gives_the_volume_back_available_with_the_reason(make_volume, owner, project):
    volume = make_volume()
    services.volume_attach_begin(actor=owner, project=project, volume_id=str(volume.uuid), holder=VM1)

    ended = services.volume_attach_end(volume_id=str(volume.uuid), holder=VM1, ok=False, message="no free PCI slot")

    assert (ended.state, ended.state_message) == ("available", "no free PCI slot")
    assert not VolumeHolder.objects.exists()


def test_ending_an_attach_twice_changes_nothing(make_volume, owner, project):
    volume = make_volume()
    uid = str(volume.uuid)
    services.volume_attach_begin(actor=owner, project=project, volume_id=uid, holder=VM1)
    services.volume_attach_end(volume_id=uid, holder=VM1, ok=True)
    entries = AuditEntry.objects.count()

    assert services.volume_attach_end(volume_id=uid, holder=VM1, ok=True).state == "in-use"
    assert services.volume_attach_end(volume_id=uid, holder=VM1, ok=False).state == "in-use"
    assert AuditEntry.objects.count() == entries


def test_a_failed_unplug_leaves_the_volume_in_use(make_volume, owner, project):
    volume = attached(make_volume())
    uid = str(volume.uuid)
    services.volume_detach_begin(actor=owner, project=project, volume_id=uid, holder=VM1)

    ended = services.volume_detach_end(volume_id=uid, holder=VM1, ok=False, message="guest did not release it")

    assert (ended.state, ended.state_message) == ("in-use", "guest did not release it")
    assert VolumeHolder.objects.get().state == "attached"
    assert services.volume_detach_end(volume_id=uid, holder=VM1, ok=True).state == "in-use"  # not detaching: no-op


def test_detaching_a_volume_the_vm_does_not_hold_is_refused(make_volume, owner, project):
    volume = attached(make_volume())
    with pytest.raises(Conflict) as refused:
        services.volume_detach_begin(actor=owner, project=project, volume_id=str(volume.uuid), holder=VM2)
    assert refused.value.code == "volume-not-attached"
    assert Volume.objects.get(pk=volume.pk).state == "in-use"


@pytest.mark.parametrize("state", ["creating", "error", "deleting"])
def test_a_volume_that_is_not_available_cannot_be_attached(make_volume, owner, project, state):
    volume = make_volume(provision=False)
    Volume.objects.filter(pk=volume.pk).update(state=state)
    with pytest.raises(Conflict) as refused:
        services.volume_attach_begin(actor=owner, project=project, volume_id=str(volume.uuid), holder=VM1)
    assert refused.value.code == "volume-unavailable"
    assert not VolumeHolder.objects.exists()


def test_another_projects_volume_is_not_found_for_attach(make_volume, outsider, owner, project, staff):
    theirs = project_create(actor=staff, name="elsewhere", manager=outsider)
    volume = make_volume()
    for actor, in_project in [(outsider, theirs), (outsider, project), (owner, theirs)]:
        with pytest.raises(NotFound):
            services.volume_attach_begin(actor=actor, project=in_project, volume_id=str(volume.uuid), holder=VM1)
    with pytest.raises(NotFound):
        services.volume_attach_begin(actor=owner, project=project, volume_id="not-a-uuid", holder=VM1)
    assert Volume.objects.get(pk=volume.pk).state == "available"


# --- the end of a VM --------------------------------------------------------------------------------------


def test_a_vm_ending_leaves_its_persistent_volume_available_with_its_data(make_volume):
    volume = attached(make_volume())
    write_marker(volume)

    services.volumes_release(holder=VM1)
    services.volumes_release(holder=VM1)  # again: nothing more

    volume.refresh_from_db()
    assert volume.state == "available"
    assert has_marker(volume)
    assert AuditEntry.objects.filter(action="storage.volume.released").count() == 1


def test_a_vm_ending_destroys_its_volatile_disk(volume_settings, project, django_capture_on_commit_callbacks):
    volatile = services.volume_create_volatile(project=project, size_gib=2, holder=VM1)
    volatile = services.volume_provision(volume_id=volatile.pk)
    assert volatile.state == "in-use"
    assert selectors.volume_holders(volatile) == [VM1]
    assert qemu_img.info(Path(volatile.path)).virtual_size == 2 * GIB

    with django_capture_on_commit_callbacks(execute=False) as sent:
        services.volumes_release(holder=VM1)
    assert len(sent) == 1
    assert services.volume_destroy(volume_id=volatile.pk).state == "deleted"
    assert not Path(volatile.path).exists()


def test_a_volatile_disk_cannot_be_attached_elsewhere_or_detached(volume_settings, project, owner):
    volatile = services.volume_provision(
        volume_id=services.volume_create_volatile(project=project, size_gib=1, holder=VM1).pk
    )
    with pytest.raises(Conflict, match="volatile"):
        services.volume_attach_begin(actor=owner, project=project, volume_id=str(volatile.uuid), holder=VM2)
    with pytest.raises(Conflict, match="volatile"):
        services.volume_detach_begin(actor=owner, project=project, volume_id=str(volatile.uuid), holder=VM1)
    with pytest.raises(Conflict) as refused:
        services.volume_delete(actor=owner, volume=volatile)
    assert refused.value.code == "volume-in-use"


def test_a_vm_ending_mid_attach_gives_the_volume_back(make_volume, owner, project):
    volume = make_volume()
    services.volume_attach_begin(actor=owner, project=project, volume_id=str(volume.uuid), holder=VM1)

    services.volumes_release(holder=VM1)

    assert Volume.objects.get(pk=volume.pk).state == "available"
    assert services.volume_attach_end(volume_id=str(volume.uuid), holder=VM1, ok=True).state == "available"


def test_a_hostile_name_never_reaches_a_path_or_a_target_name(make_volume, volume_settings):
    volume = make_volume(name="../../etc/cron.d/evil; rm -rf /")

    assert Path(volume.path).parent == volume_settings.STORAGE_FILE_DIR
    assert Path(volume.path).name == f"{volume.uuid}.qcow2"
    assert volume.name == "../../etc/cron.d/evil; rm -rf /"  # kept as the user wrote it, only ever shown escaped


def test_a_volatile_disk_is_a_file_even_where_iscsi_is_the_default(volume_settings, project):
    volume_settings.STORAGE_BACKENDS = ["iscsi", "file"]
    volume_settings.STORAGE_DEFAULT_BACKEND = "iscsi"
    volatile = services.volume_create_volatile(project=project, size_gib=1, holder=VM1)
    assert (volatile.backend, volatile.format, volatile.iqn) == ("file", "qcow2", "")


def test_requesting_and_deleting_are_audited_with_their_actor_and_what_was_asked(make_volume, member, project):
    volume = make_volume(3, actor=member, name="audited")
    services.volume_delete(actor=member, volume=volume)
    services.volume_destroy(volume_id=volume.pk)

    entries = {
        e.action: e
        for e in AuditEntry.objects.filter(content_type__model="volume", object_id=str(volume.pk)).order_by("pk")
    }
    assert list(entries) == [
        "storage.volume.requested",
        "storage.volume.created",
        "storage.volume.deleting",
        "storage.volume.deleted",
    ]
    requested = entries["storage.volume.requested"]
    assert requested.actor == member
    asked = {key: requested.details.get(key) for key in ("project", "kind", "size_gib", "backend")}
    assert asked == {"project": project.pk, "kind": "persistent", "size_gib": 3, "backend": "file"}
    assert entries["storage.volume.deleting"].actor == member
    assert entries["storage.volume.created"].actor is None  # the worker
    assert entries["storage.volume.created"].details["path"] == volume.path


def test_a_volume_whose_task_was_lost_gets_it_again_once_per_period(
    make_volume, owner, volume_settings, django_capture_on_commit_callbacks
):
    import datetime as dt

    from django.utils import timezone

    creating = make_volume(provision=False)
    deleting = make_volume()
    services.volume_delete(actor=owner, volume=deleting)
    fresh = make_volume(provision=False)
    long_ago = timezone.now() - dt.timedelta(minutes=volume_settings.STORAGE_STUCK_MINUTES + 1)
    Volume.objects.filter(pk__in=[creating.pk, deleting.pk]).update(updated=long_ago)

    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert sorted(tasks.reconcile()["resent"]) == sorted([str(creating.uuid), str(deleting.uuid)])
    assert len(sent) == 2
    assert tasks.reconcile()["resent"] == []  # not again until another period has passed
    assert Volume.objects.get(pk=fresh.pk).state == "creating"
    assert AuditEntry.objects.filter(action="storage.volume.resent").count() == 2

    tasks.volume_create(volume_id=creating.pk)
    tasks.volume_delete(volume_id=deleting.pk)
    assert Volume.objects.get(pk=creating.pk).state == "available"
    assert Volume.objects.get(pk=deleting.pk).state == "deleted"
