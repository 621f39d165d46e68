"""Storage benchmark: create and delete N volumes on each backend through the services and the tasks (the request:
checks, quota lock, row, audit, enqueue; then the task's work: qemu-img, tgtadm), per volume, beside the bare
``qemu-img create`` / ``tgtadm`` calls the backend makes, timed in the same run. Prints JSON.

    .venv/bin/python bench/storage.py                      # SQLite in a temporary directory
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/alto_bench .venv/bin/python bench/storage.py

With DATABASE_URL the (dedicated) database is dropped and recreated. The iSCSI backend runs against a tgtd the
benchmark starts on its own control port and a free TCP port (root and tgt needed; otherwise it is left out and
the JSON says why). Phases are listed in ``PHASES`` per backend: attach and detach (compute's side) add theirs
there with the same ``timed`` helper.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.marketplace import percentile, recreate_database  # noqa: E402 - after the path is set


def timed(calls: list[Callable[[], Any]]) -> list[float]:
    """Run each call once, in order; the wall time of each in milliseconds."""
    times = []
    for call in calls:
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(times), 3),
        "p95_ms": round(percentile(times, 0.95), 3),
        "mean_ms": round(statistics.fmean(times), 3),
    }


def compare(ours: list[float], bare: list[float]) -> dict[str, Any]:
    return {
        "through_services": summary(ours),
        "bare_calls": summary(bare),
        "ratio_median": round(statistics.median(ours) / statistics.median(bare), 2),
    }


# --- a private tgtd --------------------------------------------------------------------------------------


class PrivateTgtd:
    def __init__(self, directory: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.control_port = 20_000 + os.getpid() % 12_000  # tgtd takes 0 to 32767
        self.log = (directory / "tgtd.log").open("w")
        self.process = subprocess.Popen(
            ["tgtd", "-f", "-C", str(self.control_port), "--iscsi", f"portal=127.0.0.1:{self.port}"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while self.tgtadm("--mode", "target", "--op", "show", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tgtd did not start")
            time.sleep(0.1)

    def tgtadm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = ["tgtadm", "-C", str(self.control_port), "--lld", "iscsi", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=check)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


def iscsi_unavailable() -> str:
    if shutil.which("tgtd") is None or shutil.which("tgtadm") is None:
        return "tgt is not installed"
    if os.geteuid() != 0:
        return "tgtd needs root"
    return ""


# --- phases -----------------------------------------------------------------------------------------------


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], capture_output=True, check=True, timeout=120)


def bare_file(directory: Path, n: int, fmt: str) -> tuple[list[float], list[float]]:
    """What the file backend does at its core: ``qemu-img create``, and removing the file."""
    paths = [directory / f"bare-{uuid.uuid4()}.{fmt}" for _ in range(n)]
    create = timed([lambda p=p: qemu_img("create", "-q", "-f", fmt, str(p), "1G") for p in paths])
    delete = timed([lambda p=p: p.unlink() for p in paths])
    return create, delete


def bare_iscsi(directory: Path, n: int, tgtd: PrivateTgtd) -> tuple[list[float], list[float]]:
    """What the iSCSI backend does at its core: a raw file, a target, its LUN, the initiator binding; removing
    the target and the file."""
    made = [(directory / f"bare-{uuid.uuid4()}.raw", 10_000 + i) for i in range(n)]

    def create(path: Path, tid: int) -> None:
        qemu_img("create", "-q", "-f", "raw", str(path), "1G")
        tgtd.tgtadm("--mode", "target", "--op", "new", "--tid", str(tid), "--targetname", f"iqn.2026-01.bench:{tid}")
        tgtd.tgtadm(
            "--mode", "logicalunit", "--op", "new", "--tid", str(tid), "--lun", "1", "--backing-store", str(path)
        )
        tgtd.tgtadm("--mode", "target", "--op", "bind", "--tid", str(tid), "--initiator-address", "ALL")

    def delete(path: Path, tid: int) -> None:
        tgtd.tgtadm("--mode", "target", "--op", "delete", "--force", "--tid", str(tid))
        path.unlink()

    return timed([lambda a=a: create(*a) for a in made]), timed([lambda a=a: delete(*a) for a in made])


def through_services(n: int, backend: str, actor: Any, project: Any) -> tuple[list[float], list[float]]:
    """Create then delete ``n`` volumes of 1 GiB the way the API and the worker do: the service, then the task."""
    from storage import services, tasks

    volumes: list[Any] = []

    def create(i: int) -> None:
        volume = services.volume_create(actor=actor, project=project, name=f"b{i}", size_gib=1, backend=backend)
        result = tasks.volume_create.apply(kwargs={"volume_id": volume.pk}, throw=True).get()
        assert result["state"] == "available", result  # noqa: S101 - a benchmark of the happy path
        volumes.append(volume)

    def delete(volume: Any) -> None:
        services.volume_delete(actor=actor, volume=volume)
        result = tasks.volume_delete.apply(kwargs={"volume_id": volume.pk}, throw=True).get()
        assert result["state"] == "deleted", result  # noqa: S101

    create_times = timed([lambda i=i: create(i) for i in range(n)])
    delete_times = timed([lambda v=v: delete(v) for v in list(volumes)])
    return create_times, delete_times


# --- attach and detach (compute's side) -------------------------------------------------------------------


def _bench_instance(actor: Any, project: Any) -> tuple[Any, str, str]:
    """A running instance of ``project`` whose domain is defined on a simulated host (libvirt's test driver, a file
    of this run), as the boot step leaves it; returns it, the host's URI and the domain XML."""
    from django.utils import timezone

    from compute import hypervisor
    from compute.domain import DiskSpec, DomainSpec, domain_xml
    from compute.models import Host, Instance, InstanceType
    from marketplace.models import Image

    node = Path(tempfile.mkdtemp(prefix="alto-bench-host-")) / "node.xml"
    node.write_text(
        "<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads>"
        "<active>4</active><mhz>2000</mhz><model>x86_64</model></cpu><memory>8388608</memory></node>"
    )
    host = Host.objects.create(name=f"bench-{uuid.uuid4().hex[:6]}", uri=f"test://{node}", vcpus=4, ram_mib=8192)
    itype, _ = InstanceType.objects.get_or_create(name="bench", defaults={"vcpus": 1, "ram_mib": 512})
    now = timezone.now()
    image = Image.objects.create(
        identifier=uuid.uuid4().hex[:27], sha1="0" * 40, bytes=1, kind="machine", first_endorsed=now, updated=now
    )
    instance = Instance.objects.create(
        name="bench",
        project=project,
        created_by=actor,
        image=image,
        image_identifier=image.identifier,
        instance_type=itype,
        vcpus=1,
        ram_mib=512,
        root_gib=1,
        host=host,
        network="private",
        state="running",
    )
    spec = DomainSpec(
        name=f"alto-{instance.uuid}",
        uuid=instance.uuid,
        vcpus=1,
        ram_mib=512,
        console_log="/var/log/alto/bench.log",
        disks=(DiskSpec(target="vda", path="/bench/root.qcow2"),),
    )
    hypervisor.domain_define(host.uri, domain_xml(spec))
    hypervisor.domain_start(host.uri, spec.name)
    return instance, host.uri, domain_xml(spec)


def attach_detach(n: int, backend: str, actor: Any, project: Any) -> dict[str, Any]:
    """Attach then detach ``n`` volumes (made first, untimed) to one running instance the way the API and the host's
    worker do: ``instance_attach`` (lock, storage's reservation, the attachment, audit) then the hot-plug step, and
    the same for detach; beside the bare libvirt calls the step makes on the simulated host (the test driver cannot
    hot-plug: the domain is redefined with the disk added or removed, what the adapter does there)."""
    import libvirt
    from lxml import etree

    from compute import attachments
    from compute.domain import disk_xml
    from storage import selectors, services, tasks

    instance, uri, domain = _bench_instance(actor, project)
    volumes = []
    for i in range(n):
        volume = services.volume_create(actor=actor, project=project, name=f"a{i}", size_gib=1, backend=backend)
        tasks.volume_create.apply(kwargs={"volume_id": volume.pk}, throw=True)
        volumes.append(volume)
    made: list[Any] = []

    def attach(volume: Any) -> None:
        attachment = attachments.instance_attach(actor=actor, instance=instance, volume_id=str(volume.uuid))
        assert attachments.volume_attach_apply(attachment.pk), attachment  # noqa: S101 - the happy path
        made.append(attachment)

    def detach(attachment: Any) -> None:
        attachments.instance_detach(actor=actor, instance=instance, volume_id=str(attachment.volume_uuid))
        assert attachments.volume_detach_apply(attachment.pk), attachment  # noqa: S101

    attach_times = timed([lambda v=v: attach(v) for v in volumes])
    detach_times = timed([lambda a=a: detach(a) for a in list(made)])

    conn = libvirt.open(uri)  # a private copy of the simulated host, with the same domain running
    bare_domain = conn.defineXML(domain)
    bare_domain.create()
    disks = [
        disk_xml(attachments.attachment_disk(a, selectors.volume_source(v))) for a, v in zip(made, volumes, strict=True)
    ]

    def redefine(change: Callable[[Any], None]) -> None:
        root = etree.fromstring(bare_domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
        change(root.find("devices"))
        conn.defineXML(etree.tostring(root, encoding="unicode"))

    def bare_attach(xml: str) -> None:
        redefine(lambda devices: devices.append(etree.fromstring(xml.encode())))

    def bare_detach(xml: str) -> None:
        target = etree.fromstring(xml.encode()).find("target").get("dev")
        redefine(lambda devices: devices.remove(devices.find(f"disk/target[@dev='{target}']/..")))

    bare = (timed([lambda x=x: bare_attach(x) for x in disks]), timed([lambda x=x: bare_detach(x) for x in disks]))
    conn.close()
    for volume in volumes:
        services.volume_delete(actor=actor, volume=volume)
        tasks.volume_delete.apply(kwargs={"volume_id": volume.pk}, throw=True)
    return {"attach": compare(attach_times, bare[0]), "detach": compare(detach_times, bare[1])}


# Per backend: the phases measured, each (name, through the services, bare). Compute adds attach and detach.
PHASES = ("create", "delete")


def run_backend(backend: str, n: int, directory: Path, actor: Any, project: Any, tgtd: Any) -> dict[str, Any]:
    from django.conf import settings

    ours = dict(zip(PHASES, through_services(n, backend, actor, project), strict=True))
    if backend == "file":
        bare = dict(zip(PHASES, bare_file(directory, n, settings.STORAGE_FILE_FORMAT), strict=True))
    else:
        bare = dict(zip(PHASES, bare_iscsi(directory, n, tgtd), strict=True))
    measured = {phase: compare(ours[phase], bare[phase]) for phase in PHASES}
    return measured | attach_detach(n, backend, actor, project)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=100, help="volumes created and deleted per backend")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="alto-bench-storage-"))
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        recreate_database(url)
    os.environ["ALTO_VAR_DIR"] = str(work / "var")
    os.environ["STORAGE_FILE_DIR"] = str(work / "volumes")
    os.environ["ISCSI_DIR"] = str(work / "iscsi")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # The broker of this run only (the tasks are run here; their messages pile up in the temporary directory).
    os.environ["CELERY_BROKER_URL"] = "filesystem://"
    os.environ.pop("CELERY_RESULT_BACKEND", None)
    skipped = iscsi_unavailable()
    tgtd = None if skipped else PrivateTgtd(work)
    if tgtd is not None:
        os.environ.update(
            STORAGE_BACKENDS="file,iscsi",
            ISCSI_CONTROL_PORT=str(tgtd.control_port),
            ISCSI_PORTAL=f"127.0.0.1:{tgtd.port}",
            ISCSI_IQN_DOMAIN="org.example.bench",
        )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        from accounts.models import Quota
        from accounts.services import project_personal_ensure

        call_command("migrate", verbosity=0)
        actor = get_user_model().objects.create_user(username="bench", email="bench@example.org")
        project = project_personal_ensure(user=actor)
        Quota.objects.filter(project=project).update(volumes=10 * args.volumes, volume_gib=10 * args.volumes)
        report: dict[str, Any] = {
            "volumes_per_backend": args.volumes,
            "volume_gib": 1,
            "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
            "file_format": settings.STORAGE_FILE_FORMAT,
            "backends": {},
        }
        for backend in ("file", "iscsi"):
            if backend == "iscsi" and tgtd is None:
                report["backends"]["iscsi"] = {"skipped": skipped}
                continue
            directory = work / f"bare-{backend}"
            directory.mkdir()
            report["backends"][backend] = run_backend(backend, args.volumes, directory, actor, project, tgtd)
    finally:
        if tgtd is not None:
            tgtd.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
