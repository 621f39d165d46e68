"""The iSCSI backend against a real tgtd (RUNBOOK: iSCSI): targets seen by a real initiator (libiscsi's iscsi-ls,
qemu's iSCSI driver), removed on delete, and put back with their data by reconciliation after a tgtd restart."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from celery.exceptions import Retry

from core.models import AuditEntry
from storage import services, tasks
from storage.backends import VolumeSpec, iscsi_backend
from storage.backends.tgt import Tgt, TgtTransient
from storage.models import Volume

GIB = 1024**3

pytestmark = pytest.mark.skipif(
    not (shutil.which("iscsi-ls") and shutil.which("qemu-io")), reason="needs libiscsi-bin and qemu-utils"
)


def iscsi_ls(tgtd, *, credentials: str = "") -> subprocess.CompletedProcess:
    """libiscsi's initiator: the targets and LUNs the portal offers (``-s``: with their sizes)."""
    return subprocess.run(
        ["iscsi-ls", "-s", f"iscsi://{credentials}{tgtd.portal}"], capture_output=True, text=True, timeout=30
    )


def lun_url(tgtd, volume: Volume) -> str:
    return f"iscsi://{tgtd.portal}/{volume.iqn}/1"


def lun_size(tgtd, volume: Volume) -> int:
    """The LUN's size in bytes as qemu's iSCSI initiator reads it."""
    shown = subprocess.run(
        ["qemu-img", "info", "--output=json", lun_url(tgtd, volume)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(shown.stdout)["virtual-size"]


def qemu_io(url: str, command: str, *, fmt: str = "raw") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["qemu-io", "-f", fmt, "-c", command, url], capture_output=True, text=True, timeout=60, check=False
    )


def write_marker(url: str, *, fmt: str = "raw") -> None:
    done = qemu_io(url, "write -P 0x5a 1M 64k", fmt=fmt)
    assert done.returncode == 0 and "wrote" in done.stdout, done.stdout + done.stderr


def has_marker(url: str, *, fmt: str = "raw") -> bool:
    done = qemu_io(url, "read -P 0x5a 1M 64k", fmt=fmt)
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout + done.stderr


@pytest.fixture
def make_iscsi_volume(tgtd, project, owner):
    def make(size_gib: int = 1, **fields) -> Volume:
        volume = services.volume_create(actor=owner, project=project, name="scratch", size_gib=size_gib, **fields)
        return services.volume_provision(volume_id=volume.pk)

    return make


def test_a_new_iscsi_volume_is_a_lun_of_its_size_that_a_real_initiator_lists(tgtd, make_iscsi_volume):
    volume = make_iscsi_volume(size_gib=2, backend="iscsi")

    assert volume.state == "available"
    assert volume.iqn == f"iqn.{volume.created:%Y-%m}.org.example:{volume.uuid}"
    listed = iscsi_ls(tgtd)
    assert listed.returncode == 0, listed.stderr
    assert f"Target:{volume.iqn} Portal:{tgtd.portal}" in listed.stdout
    assert "Lun:1    Type:DIRECT_ACCESS" in listed.stdout
    assert lun_size(tgtd, volume) == 2 * GIB
    assert Path(volume.path).stat().st_size == 2 * GIB


def test_deleting_an_iscsi_volume_removes_its_target_and_its_file(tgtd, make_iscsi_volume, owner):
    volume = make_iscsi_volume(backend="iscsi")
    services.volume_delete(actor=owner, volume=volume)
    deleted = services.volume_destroy(volume_id=volume.pk)

    assert deleted.state == "deleted"
    assert volume.iqn not in iscsi_ls(tgtd).stdout
    assert tgtd.targets() == []
    assert not Path(volume.path).exists()


def test_each_volume_gets_its_own_target(tgtd, make_iscsi_volume):
    first = make_iscsi_volume(backend="iscsi")
    second = make_iscsi_volume(backend="iscsi")

    assert sorted(iqn for _tid, iqn in tgtd.targets()) == sorted([first.iqn, second.iqn])
    write_marker(lun_url(tgtd, first))
    assert has_marker(lun_url(tgtd, first))
    assert not has_marker(lun_url(tgtd, second))


def test_after_a_tgtd_restart_reconciliation_brings_the_targets_back_with_their_data(tgtd, make_iscsi_volume):
    volumes = [make_iscsi_volume(backend="iscsi") for _ in range(3)]
    for volume in volumes:
        write_marker(lun_url(tgtd, volume))

    tgtd.restart()
    assert tgtd.targets() == []
    report = tasks.reconcile()

    assert sorted(report["restored"]) == sorted(str(v.uuid) for v in volumes)
    assert sorted(iqn for _tid, iqn in tgtd.targets()) == sorted(v.iqn for v in volumes)
    for volume in volumes:
        assert has_marker(lun_url(tgtd, volume))
        assert lun_size(tgtd, volume) == GIB
    assert AuditEntry.objects.filter(action="storage.volume.target_restored").count() == 3
    assert tasks.reconcile()["restored"] == []  # nothing more to do


def test_reconciliation_leaves_targets_no_volume_accounts_for_alone(tgtd, make_iscsi_volume, tmp_path):
    stranger = tmp_path / "stranger.raw"
    stranger.write_bytes(b"\0" * 1024 * 1024)
    iqn = f"iqn.2026-01.org.example:{uuid.uuid4()}"
    Tgt(control_port=tgtd.control_port).target_ensure(iqn=iqn, backing=stranger, read_only=False)

    report = tasks.reconcile()

    assert report["unknown"] == [iqn]
    assert iqn in [found for _tid, found in tgtd.targets()]


def test_making_a_target_twice_changes_nothing(tgtd, tmp_path):
    backing = tmp_path / "disk.raw"
    backing.write_bytes(b"\0" * 1024 * 1024)
    tgt = Tgt(control_port=tgtd.control_port)
    iqn = f"iqn.2026-01.org.example:{uuid.uuid4()}"

    first, made = tgt.target_ensure(iqn=iqn, backing=backing, read_only=False)
    again, made_again = tgt.target_ensure(iqn=iqn, backing=backing, read_only=False)

    assert made and not made_again
    assert (again.tid, again.iqn, again.luns[1].path, again.initiators) == (
        first.tid, iqn, str(backing), ("ALL",),
    )  # fmt: skip
    assert len(tgtd.targets()) == 1
    assert tgt.target_remove(iqn=iqn) is True
    assert tgt.target_remove(iqn=iqn) is False


def test_a_target_of_another_file_under_the_same_name_is_refused(tgtd, tmp_path):
    tgt = Tgt(control_port=tgtd.control_port)
    iqn = f"iqn.2026-01.org.example:{uuid.uuid4()}"
    for name in ("a.raw", "b.raw"):
        (tmp_path / name).write_bytes(b"\0" * 1024 * 1024)
    tgt.target_ensure(iqn=iqn, backing=tmp_path / "a.raw", read_only=False)

    with pytest.raises(Exception, match="exports .*a.raw, not .*b.raw"):
        tgt.target_ensure(iqn=iqn, backing=tmp_path / "b.raw", read_only=False)


def test_a_target_made_half_way_is_completed(tgtd, tmp_path):
    """A worker that died between `new target` and `new logicalunit` left a target without its LUN."""
    backing = tmp_path / "disk.raw"
    backing.write_bytes(b"\0" * 1024 * 1024)
    iqn = f"iqn.2026-01.org.example:{uuid.uuid4()}"
    tgtd.tgtadm("--mode", "target", "--op", "new", "--tid", "7", "--targetname", iqn)

    target, made = Tgt(control_port=tgtd.control_port).target_ensure(iqn=iqn, backing=backing, read_only=False)

    assert made and target.tid == 7
    assert target.luns[1].path == str(backing)
    assert target.initiators == ("ALL",)


def test_with_chap_a_target_answers_only_its_own_credentials(tgtd, make_iscsi_volume, volume_settings):
    volume_settings.ISCSI_CHAP = True
    volume = make_iscsi_volume(backend="iscsi")
    other = make_iscsi_volume(backend="iscsi")

    assert volume.chap_username and len(volume.chap_secret) == 16
    assert volume.chap_secret != other.chap_secret
    source = services.selectors.volume_source(volume)
    assert (source.chap_username, source.chap_secret) == (volume.chap_username, volume.chap_secret)
    assert "chap_secret='***'" in repr(source) and volume.chap_secret not in repr(source)

    anonymous = f"iscsi://{tgtd.portal}/{volume.iqn}/1"
    assert qemu_io(anonymous, "read 0 512").returncode != 0
    wrong = f"iscsi://{other.chap_username}%{other.chap_secret}@{tgtd.portal}/{volume.iqn}/1"
    assert qemu_io(wrong, "read 0 512").returncode != 0
    right = f"iscsi://{volume.chap_username}%{volume.chap_secret}@{tgtd.portal}/{volume.iqn}/1"
    assert qemu_io(right, "read 0 512").returncode == 0

    services.volume_delete(actor=volume.created_by, volume=volume)
    services.volume_destroy(volume_id=volume.pk)
    accounts = tgtd.tgtadm("--mode", "account", "--op", "show").stdout
    assert volume.chap_username not in accounts and other.chap_username in accounts


def test_the_chap_secret_never_reaches_the_audit_log(tgtd, make_iscsi_volume, volume_settings):
    volume_settings.ISCSI_CHAP = True
    volume = make_iscsi_volume(backend="iscsi")

    logged = json.dumps(list(AuditEntry.objects.values_list("details", flat=True)))
    assert volume.chap_secret not in logged


def test_a_tgtd_that_does_not_answer_is_a_transient_failure_the_task_retries(tgtd, make_iscsi_volume, settings):
    settings.ISCSI_CONTROL_PORT = tgtd.control_port + 1  # nobody listens there
    with pytest.raises(TgtTransient, match="tgtd does not answer"):
        make_iscsi_volume(backend="iscsi")


def test_iscsi_source_names_portal_iqn_and_lun(tgtd, make_iscsi_volume):
    volume = make_iscsi_volume(backend="iscsi")

    source = services.selectors.volume_source(volume)

    assert (source.backend, source.format, source.read_only) == ("iscsi", "raw", False)
    assert (source.portal, source.iqn, source.lun, source.path) == (tgtd.portal, volume.iqn, 1, None)
    assert source.chap_username is None and source.chap_secret is None


def test_the_backend_restores_nothing_when_the_backing_file_is_gone(tgtd, tmp_path):
    spec = VolumeSpec(
        uuid="x", size_gib=1, format="raw", path=tmp_path / "gone.raw", read_only=False, iqn="iqn.2026-01.org.example:x"
    )
    with pytest.raises(Exception, match="missing"):
        iscsi_backend().restore(spec)
    assert tgtd.targets() == []


def test_a_tgtd_that_stays_down_leaves_the_volume_in_error_once_the_retries_are_spent(tgtd, project, owner, settings):
    volume = services.volume_create(actor=owner, project=project, name="x", size_gib=1, backend="iscsi")
    settings.ISCSI_CONTROL_PORT = tgtd.control_port + 1  # nobody listens there

    with pytest.raises(Retry, match="tgtd does not answer"):  # the worker sends it again later
        tasks.volume_create.apply(kwargs={"volume_id": volume.pk}, throw=True)
    assert Volume.objects.get(pk=volume.pk).state == "creating"
    tasks.volume_create.apply(kwargs={"volume_id": volume.pk}, retries=tasks.volume_create.max_retries)

    volume.refresh_from_db()
    assert volume.state == "error"
    assert "tgtd does not answer" in volume.state_message and "gave up after retries" in volume.state_message


def test_reconciliation_does_nothing_where_the_site_has_no_iscsi(volume_settings, settings):
    settings.ISCSI_CONTROL_PORT = 1  # no tgtd there: it must not be asked
    assert tasks.reconcile() == {"restored": [], "failed": [], "unknown": []}


def test_workers_making_targets_at_the_same_moment_each_get_their_own(tgtd, tmp_path):
    """Target ids are tgtd's: two workers that pick the same free one at once must not fail or share it."""
    from concurrent.futures import ThreadPoolExecutor

    tgt = Tgt(control_port=tgtd.control_port)
    iqns = [f"iqn.2026-01.org.example:{uuid.uuid4()}" for _ in range(8)]
    for n in range(8):
        (tmp_path / f"{n}.raw").write_bytes(b"\0" * 1024 * 1024)

    with ThreadPoolExecutor(max_workers=8) as pool:
        made = list(
            pool.map(lambda n: tgt.target_ensure(iqn=iqns[n], backing=tmp_path / f"{n}.raw", read_only=False), range(8))
        )

    assert sorted(iqn for _tid, iqn in tgtd.targets()) == sorted(iqns)
    assert len({target.tid for target, _made in made}) == 8
    shown = Tgt(control_port=tgtd.control_port).targets()
    assert all(shown[iqns[n]].luns[1].path == str(tmp_path / f"{n}.raw") for n in range(8))
