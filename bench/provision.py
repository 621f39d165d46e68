"""Provisioning benchmark (issue 10): VMs requested through the HTTP API until they run, beside a bare loop
doing the same work without the product; the instance list API on a large site; scheduler placement. Prints JSON.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/alto_bench_prov CELERY_BROKER_URL=redis://127.0.0.1:6379/4 \\
        CACHE_URL=redis://127.0.0.1:6379/5 .venv/bin/python bench/provision.py

The database (a dedicated one: it is dropped) is recreated and migrated, and the broker's Redis database is
flushed. Then:

- ``provision``: the portal runs under gunicorn (``deploy/gunicorn.conf.py``) and one Celery worker process per
  simulated host consumes that host's queue ``host.<name>``, as a site runs them (DESIGN §4). Hosts are libvirt
  test-driver file URIs; the image is a real signed Marketplace entry with a ``file:`` location, so the workers
  download and check it once, then make a real qcow2 overlay and seed ISO per VM. ``--clients`` threads send
  the N ``POST /api/v1/compute/instances/`` requests together (token auth, one project per user); the clock
  stops when the last VM is ``running``. The bare loop does, per VM, an ORM insert, libvirt ``createXML`` on a
  test-driver host and an ORM update, in this process, in the same run: ``ratio`` = per-VM time / bare per-VM.
- ``list``: ``GET /api/v1/compute/instances/`` (Django test client) with 2,000 hosts and 40,000 instances
  (bulk-created, most of them terminated as on a site with history), for a researcher (one project of 200
  instances) and for a staff account that is a member of every project (all 40,000).
- ``place``: ``scheduler.place`` alone with 100, 1,000 and 10,000 hosts (four live instances each), and
  placements per second when ``--clients`` threads place and create instances together.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import percentile, recreate_database, setup_django  # noqa: E402

NODE_XML = """<node>
  <cpu><mhz>2400</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets><cores>{vcpus}</cores>
  <threads>1</threads><active>{vcpus}</active></cpu>
  <memory>{ram_kib}</memory>
</node>
"""
HOST_VCPUS = 256
HOST_RAM_MIB = 2 * 1024 * 1024
INSTANCE_TYPE = "t1.micro"


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def summary(values_ms: list[float]) -> dict:
    return {
        "p50": round(statistics.median(values_ms), 2),
        "p95": round(percentile(values_ms, 0.95), 2),
        "max": round(max(values_ms), 2),
    }


def node_uri(var_dir: Path, name: str) -> str:
    directory = var_dir / "bench-hosts"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.xml"
    path.write_text(NODE_XML.format(vcpus=HOST_VCPUS, ram_kib=HOST_RAM_MIB * 1024))
    return f"test://{path}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- CPU accounting: where the time goes, per tier ----------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and of its children it has waited for, e.g. qemu-img)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), sum(int(v) for v in fields[11:15]) / TICKS


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class CpuMeter:
    """CPU seconds used while it runs, by tier: the web tier (gunicorn and its workers), the Celery workers (with
    the processes they ran, qemu-img), this process (the clients' threads, the bare loop) and the PostgreSQL
    backends serving the benchmark's database. Sampled every ``interval`` seconds, so that processes started
    meanwhile count too (a backend that ends between two samples loses its last interval). Reading /proc costs
    this process CPU too (some ms a sample, all of it during a long run through the API, next to nothing during the
    short bare loop): the meter's own CPU is taken out of the benchmark tier and shown apart (:attr:`own_seconds`)."""

    def __init__(self, *, web_pid: int = 0, worker_pids: tuple[int, ...] = (), interval: float = 0.5) -> None:
        self.web_pid, self.worker_pids, self.interval = web_pid, set(worker_pids), interval
        self.database = os.environ["DATABASE_URL"].rsplit("/", 1)[1]
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.known: dict[int, str | None] = {}
        self._initial = True
        self.own_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tier(self, pid: int, parent: int) -> str | None:
        if pid == os.getpid():
            return "benchmark"
        if pid in self.worker_pids:
            return "workers"
        if self.web_pid and (pid == self.web_pid or parent == self.web_pid):
            return "web"
        cmdline = _cmdline(pid)
        if cmdline.startswith("postgres: ") and f": postgres {self.database} " in cmdline:
            return "postgres"
        return None

    def sample(self) -> None:
        started = time.thread_time()
        try:
            self._sample()
        finally:
            self.own_seconds += time.thread_time() - started

    def _sample(self) -> None:
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            stat = _proc_stat(pid)
            if stat is None:
                continue
            if pid not in self.known:
                self.known[pid] = self._tier(pid, stat[0])
                # A process that appears after the start counts from nothing; one there before, from now.
                self.first[pid] = stat[1] if self._initial else 0.0
            tier = self.known[pid]
            if tier is not None:
                self.last[pid] = (tier, stat[1])

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> CpuMeter:
        self.sample()
        self._initial = False
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def per_vm_ms(self, count: int, tiers: tuple[str, ...] = ("web", "workers", "postgres", "benchmark")) -> dict:
        used = dict.fromkeys(tiers, 0.0)
        for pid, (tier, seconds) in self.last.items():
            if tier in used:
                used[tier] += seconds - self.first.get(pid, 0.0)
        if "benchmark" in used:
            used["benchmark"] = max(0.0, used["benchmark"] - self.own_seconds)
        return {tier: ms(seconds / count) for tier, seconds in used.items()}


# --- The site: accounts, projects, a signed image, networks, hosts ---------------------------------------


class Site:
    def __init__(self, var_dir: Path, *, hosts: int, users: int) -> None:
        from django.contrib.auth import get_user_model

        from accounts.models import Quota
        from accounts.services import api_token_create, project_create, ssh_key_add
        from compute import services as compute_services
        from compute.models import InstanceType
        from compute.networks import network_create

        user_model = get_user_model()
        self.var_dir = var_dir
        self.staff = user_model.objects.create_user("bench-admin", "admin@bench.example.org", is_staff=True)
        compute_services.instance_types_seed(actor=self.staff)
        self.itype = InstanceType.objects.get(name=INSTANCE_TYPE)
        for name, kind, cidr, gateway in [
            ("private", "private", "10.64.0.0/20", "10.64.0.1"),
            ("local", "local", "172.24.0.0/20", "172.24.0.1"),
            ("public", "public", "203.0.113.0/24", "203.0.113.1"),
        ]:
            network_create(
                actor=self.staff, name=name, kind=kind, cidr=cidr, gateway=gateway, dns=[gateway], bridge=f"br-{kind}"
            )
        self.image = self._signed_image()
        self.hosts = [
            compute_services.host_register(actor=self.staff, name=f"bench-{n}", uri=node_uri(var_dir, f"bench-{n}"))
            for n in range(hosts)
        ]
        # Researchers, each managing a project with room for every VM of the run, with a token and an SSH key.
        self.users = []
        for n in range(users):
            user = user_model.objects.create_user(f"researcher{n}", f"researcher{n}@bench.example.org")
            project = project_create(actor=self.staff, name=f"bench-{n}", manager=user)
            Quota.objects.filter(project=project).update(
                instances=100_000, vcpus=1_000_000, ram_mib=1_000_000_000, public_ips=100
            )
            _, secret = api_token_create(actor=user, name="bench")
            key = ssh_key_add(actor=user, name="laptop", public_key=public_key_line())
            self.users.append({"user": user, "project": project, "token": secret, "ssh_key": key.pk})

    def _signed_image(self):
        from django.conf import settings
        from django.contrib.auth import get_user_model

        from marketplace import metadata, services, signing

        content = os.urandom(1024 * 1024)
        directory = Path(settings.MARKETPLACE_FILE_LOCATION_DIRS[0])
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "bench.raw"
        path.write_bytes(content)
        home = self.var_dir / "bench-gnupg"
        home.mkdir(mode=0o700)
        gpg = ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]
        uid = "Bench Creator <bench.creator@example.org>"
        subprocess.run([*gpg, "--quick-gen-key", uid, "ed25519", "sign", "never"], check=True, capture_output=True)
        armored = subprocess.run([*gpg, "--armor", "--export", uid], check=True, capture_output=True).stdout.decode()
        creator = get_user_model().objects.create_user("bench-creator", "bench.creator@example.org")
        key = services.pgp_key_register(actor=creator, armored=armored)
        document = metadata.build(
            image_bytes=len(content),
            checksums={
                "SHA-1": hashlib.sha1(content).hexdigest(),  # noqa: S324 - the identifier's own algorithm
                "SHA-256": hashlib.sha256(content).hexdigest(),
            },
            type="base",
            title="Benchmark image",
            os="Ubuntu",
            os_version="24.04",
            os_arch="x86_64",
            kind="machine",
            format="raw",
            compression="",
            locations=(f"file://{path}",),
        )
        raw = signing.sign(document, gnupghome=home, fingerprint=key.fingerprint)
        signing.shutdown_agent(home)
        return services.entry_upload(raw=raw, uploader=creator).image


def public_key_line() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


# --- Processes: gunicorn and one Celery worker per host queue ----------------------------------------------


class Processes:
    def __init__(self, var_dir: Path, *, hosts: list, web_workers: int) -> None:
        self.var_dir = var_dir
        self.port = free_port()
        self.env = {
            **os.environ,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_WORKERS": str(web_workers),
            "GUNICORN_TIMEOUT": "120",
        }
        self.procs: list[subprocess.Popen] = []
        self.logs: list = []
        self._start([sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"], "gunicorn")
        self.worker_logs = []
        for host in hosts:
            log = self._start(
                [
                    sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", f"host.{host.name}",
                    "--pool=solo", "--loglevel=INFO", "--without-gossip", "--without-mingle",
                    "--hostname", f"bench-{host.name}@%h",
                ],
                f"worker-{host.name}",
            )  # fmt: skip
            self.worker_logs.append(log)
        self._wait_ready()

    def _start(self, argv: list[str], name: str) -> Path:
        path = self.var_dir / f"{name}.log"
        log = open(path, "w")  # noqa: SIM115 - kept open for the process's life
        self.logs.append(log)
        self.procs.append(subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT))
        return path

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                tails = {log.name: Path(log.name).read_text()[-2000:] for log in self.logs}
                raise RuntimeError(f"a process did not start: {json.dumps(tails, indent=1)}")
            workers_ready = all("ready." in path.read_text() for path in self.worker_logs)
            with contextlib.suppress(httpx.HTTPError):
                if workers_ready and httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return
            time.sleep(0.3)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in self.logs:
            log.close()


# --- 1. Provisioning through the API, beside the bare loop ------------------------------------------------


def provision_through_api(site: Site, procs: Processes, count: int, clients: int, tag: str) -> dict:
    import httpx
    from django.db.models import Count, Max

    from compute.models import Instance

    local = threading.local()

    def send(n: int) -> tuple[int, float, str]:
        who = site.users[n % len(site.users)]
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=procs.url, timeout=120)
        body = {
            "name": f"{tag}-{n}",
            "image": site.image.identifier,
            "instance_type": INSTANCE_TYPE,
            "network": "private",
            "ssh_keys": [who["ssh_key"]],
            "project": who["project"].pk,
        }
        start = time.perf_counter()
        response = client.post(
            "/api/v1/compute/instances/", json=body, headers={"Authorization": f"Token {who['token']}"}
        )
        elapsed = time.perf_counter() - start
        return response.status_code, elapsed, response.text[:300] if response.status_code != 202 else ""

    meter = CpuMeter(web_pid=procs.procs[0].pid, worker_pids=tuple(p.pid for p in procs.procs[1:])).__enter__()
    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        answers = list(pool.map(send, range(count)))
    requests_seconds = time.perf_counter() - clock
    refused = [a for a in answers if a[0] != 202]
    mine = Instance.objects.filter(name__startswith=f"{tag}-")
    deadline = time.monotonic() + max(300, count * 2)
    while mine.exclude(state__in=["running", "error"]).exists():
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    meter.__exit__()
    states = dict(mine.values_list("state").annotate(n=Count("pk")).order_by())
    last = mine.filter(state="running").aggregate(last=Max("updated"))["last"]
    wall = (last - started).total_seconds() if last else float("nan")
    to_running = [
        (row.updated - row.created).total_seconds() * 1000
        for row in mine.filter(state="running").only("created", "updated")
    ]
    errors = list(mine.filter(state="error").values_list("state_message", flat=True)[:3])
    return {
        "vms": count,
        "clients": clients,
        "states": states,
        "refused": len(refused),
        "refused_sample": refused[:3],
        "error_sample": errors,
        "post_ms": summary([a[1] * 1000 for a in answers]),
        "all_requests_answered_s": round(requests_seconds, 2),
        "wall_s": round(wall, 2),
        "per_vm_ms": ms(wall / count),
        "request_to_running_ms": summary(to_running) if to_running else None,
        # Where this run's CPU went (sampled: see CpuMeter), which other load on a shared machine does not
        # stretch as it stretches the wall-clock figures.
        "cpu_ms_per_vm": meter.per_vm_ms(count),
        "meter_cpu_ms_per_vm": ms(meter.own_seconds / count),
    }


def bare_loop(site: Site, count: int, tag: str) -> dict:
    """Per VM: an ORM insert, libvirt createXML on a test-driver host, an ORM update. No product code runs
    but the domain XML builder (a pure function, the same XML the worker defines)."""
    import libvirt
    from django.utils import timezone

    from compute.domain import DiskSpec, DomainSpec, NicSpec, domain_xml
    from compute.models import Host, Instance

    uri = node_uri(site.var_dir, f"bare-{tag}")
    host = Host.objects.create(name=f"bare-{tag}", uri=uri, vcpus=HOST_VCPUS, ram_mib=HOST_RAM_MIB, enabled=False)
    project = site.users[0]["project"]
    conn = libvirt.open(uri)
    meter = CpuMeter().__enter__()
    try:
        start = time.perf_counter()
        for n in range(count):
            instance = Instance.objects.create(
                name=f"{tag}-{n}",
                project=project,
                created_by=site.users[0]["user"],
                image=site.image,
                image_identifier=site.image.identifier,
                instance_type=site.itype,
                vcpus=site.itype.vcpus,
                ram_mib=site.itype.ram_mib,
                root_gib=site.itype.root_gib,
                host=host,
                network="private",
                state="booting",
            )
            where = site.var_dir / "bare" / str(instance.uuid)
            xml = domain_xml(
                DomainSpec(
                    name=f"alto-{instance.uuid}",
                    uuid=instance.uuid,
                    vcpus=instance.vcpus,
                    ram_mib=instance.ram_mib,
                    console_log=f"{where}/console.log",
                    disks=(DiskSpec(target="vda", path=f"{where}/root.qcow2"),),
                    nic=NicSpec(bridge="br-private", mac=f"52:54:00:00:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}"),
                    seed_iso=f"{where}/seed.iso",
                )
            )
            conn.createXML(xml, 0)
            Instance.objects.filter(pk=instance.pk).update(state="running", updated=timezone.now())
        elapsed = time.perf_counter() - start
        meter.__exit__()
    finally:
        conn.close()
    Instance.objects.filter(host=host).update(state="terminated")
    return {
        "vms": count,
        "seconds": round(elapsed, 3),
        "per_vm_ms": ms(elapsed / count),
        "cpu_ms_per_vm": meter.per_vm_ms(count, ("benchmark", "postgres")),
        "meter_cpu_ms_per_vm": ms(meter.own_seconds / count),
    }


def warm_up(site: Site, procs: Processes, clients: int) -> None:
    """Reads that load every gunicorn worker's code and connections, as on a site that has been up a while."""
    import httpx

    headers = {"Authorization": f"Token {site.users[0]['token']}"}

    def get(path: str) -> None:
        with httpx.Client(base_url=procs.url, timeout=60) as client:
            client.get(path, headers=headers).raise_for_status()

    paths = [
        "/api/v1/compute/instances/",
        "/api/v1/compute/instance-types/",
        f"/api/v1/marketplace/images/{site.image.identifier}/",
    ]
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(get, paths * clients))


def measure_provision(site: Site, procs: Processes, sizes: list[int], clients: int) -> list[dict]:
    warm_up(site, procs, clients)
    runs = []
    for count in sizes:
        tag = f"n{count}"
        api = provision_through_api(site, procs, count, clients, tag)
        bare = bare_loop(site, count, f"bare{count}")
        runs.append(
            {
                "vms": count,
                "api": api,
                "bare": bare,
                "ratio": round(api["per_vm_ms"] / bare["per_vm_ms"], 1),
                # The same comparison in CPU time, which other load on a shared machine does not stretch.
                "cpu_ratio": round(sum(api["cpu_ms_per_vm"].values()) / sum(bare["cpu_ms_per_vm"].values()), 1),
                "goal_ratio": 10,
            }
        )
    return runs


# --- 3. Placement -----------------------------------------------------------------------------------------


def bulk_instances(site: Site, rows: list[tuple], *, batch: int = 5000) -> list:
    """``rows`` of (project, host, state, created): Instance rows as the product makes them, in bulk."""
    from compute.models import Instance

    made = [
        Instance(
            name=f"vm-{n}",
            project=project,
            created_by=site.staff,
            image=site.image,
            image_identifier=site.image.identifier,
            instance_type=site.itype,
            vcpus=site.itype.vcpus,
            ram_mib=site.itype.ram_mib,
            root_gib=site.itype.root_gib,
            host=host,
            network="private",
            state=state,
            created=created,
        )
        for n, (project, host, state, created) in enumerate(rows)
    ]
    out = []
    created = Instance._meta.get_field("created")
    created.auto_now_add = False  # keep the given times (a site's history), as a data import would
    try:
        for start in range(0, len(made), batch):
            out.extend(Instance.objects.bulk_create(made[start : start + batch]))
    finally:
        created.auto_now_add = True
    return out


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in ("compute_host", "compute_instance", "compute_lease", "accounts_membership", "accounts_project"):
            cursor.execute(f"VACUUM ANALYZE {table}")


def measure_place(site: Site, sizes: list[int], repeat: int, clients: int) -> list[dict]:
    from django.db import close_old_connections, transaction

    from compute import scheduler
    from compute.models import Host, Instance

    Host.objects.update(enabled=False)  # only this part's hosts are candidates
    project = site.users[0]["project"]
    made = 0
    results = []
    now = dt.datetime.now(dt.UTC)
    per_thread = max(5, repeat // 2)
    for size in sizes:
        hosts = Host.objects.bulk_create(
            [
                Host(name=f"place-{n}", uri=f"test:///place/{n}.xml", vcpus=64, ram_mib=262144)
                for n in range(made, size)
            ],
            batch_size=5000,
        )
        bulk_instances(site, [(project, h, "running", now) for h in hosts for _ in range(4)])
        made = size
        analyze()
        times = []
        for _ in range(repeat + 3):
            start = time.perf_counter()
            with transaction.atomic():
                scheduler.place(instance_type=site.itype)
            times.append((time.perf_counter() - start) * 1000)
        times = times[3:]

        # Concurrent placements: each thread places and creates the instance in one transaction, as
        # instance_request does, and commits.
        def worker(_thread: int) -> None:
            try:
                for _n in range(per_thread):
                    with transaction.atomic():
                        host = scheduler.place(instance_type=site.itype)
                        bulk_instances(site, [(project, host, "scheduled", dt.datetime.now(dt.UTC))])
            finally:
                close_old_connections()

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(worker, range(clients)))
        concurrent_seconds = time.perf_counter() - start
        placed = clients * per_thread
        Instance.objects.filter(state="scheduled", host__name__startswith="place-").delete()
        results.append(
            {
                "hosts": size,
                "live_instances_on_them": 4 * size,
                "place_ms": summary(times),
                "concurrent": {
                    "threads": clients,
                    "placements": placed,
                    "per_second": round(placed / concurrent_seconds, 1),
                },
            }
        )
    Instance.objects.filter(host__name__startswith="place-").delete()
    Host.objects.filter(name__startswith="place-").delete()
    return results


# --- 2. The instance list API ------------------------------------------------------------------------------


def measure_list(site: Site, *, hosts: int, instances: int, projects: int, repeat: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from accounts.models import Membership, Project, Quota
    from compute.models import Host, Instance, Lease

    rng = random.Random(20141001)  # noqa: S311 - reproducible data, not secrets
    # The totals asked for, counting what the earlier parts left (their hosts and instances).
    hosts -= Host.objects.count()
    instances -= Instance.objects.count()
    host_rows = Host.objects.bulk_create(
        [Host(name=f"list-{n}", uri=f"test:///list/{n}.xml", vcpus=64, ram_mib=262144) for n in range(hosts)],
        batch_size=5000,
    )
    user_model = get_user_model()
    owners = user_model.objects.bulk_create(
        [user_model(username=f"list-user{n}", email=f"list-user{n}@bench.example.org") for n in range(projects)]
    )
    project_rows = Project.objects.bulk_create([Project(name=f"list-{n}") for n in range(projects)])
    Quota.objects.bulk_create(
        [
            Quota(project=p, instances=1000, vcpus=1000, ram_mib=10**7, volume_gib=0, volumes=0, public_ips=0)
            for p in project_rows
        ]
    )
    Membership.objects.bulk_create(
        [Membership(project=p, user=u, role="manager") for p, u in zip(project_rows, owners, strict=True)]
        + [Membership(project=p, user=site.staff, role="member") for p in project_rows]
    )
    # A site with history: one instance in ten still lives (with a lease), the rest are terminated.
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=365)
    rows = []
    for n in range(instances):
        live = n % 10 == 0
        rows.append(
            (
                project_rows[n % projects],
                rng.choice(host_rows),
                rng.choice(["running", "running", "stopped", "error"]) if live else "terminated",
                start + dt.timedelta(seconds=n * 600 + rng.randint(0, 500)),
            )
        )
    made = bulk_instances(site, rows)
    live = [i for i in made if i.state != "terminated"]
    free = list(Lease.objects.filter(instance__isnull=True, network__kind__in=["private", "local"]).order_by("pk"))
    for instance, lease in zip(live, free, strict=False):
        lease.instance = instance
    Lease.objects.bulk_update(free[: len(live)], ["instance"], batch_size=5000)
    analyze()

    researcher = owners[0]
    client = Client()
    results = []
    for who, user in (("researcher", researcher), ("staff", site.staff)):
        client.force_login(user)
        for label, params in (("first page", {}), ("state=running", {"state": "running"})):
            times = []
            for round_ in range(repeat + 3):
                t0 = time.perf_counter()
                response = client.get("/api/v1/compute/instances/", params)
                elapsed = (time.perf_counter() - t0) * 1000
                assert response.status_code == 200, response.content[:300]
                if round_ >= 3:
                    times.append(elapsed)
            body = response.json()
            with CaptureQueriesContext(connection) as queries:
                client.get("/api/v1/compute/instances/", params)
            results.append(
                {
                    "who": who,
                    "query": label,
                    "visible": body["count"],
                    "page": len(body["results"]),
                    "queries": len(queries),
                    "ms": summary(times),
                }
            )
    return {
        "hosts": Host.objects.count(),
        "instances": Instance.objects.count(),
        "live_instances": Instance.objects.live().count(),
        "projects": projects,
        "goal_p95_ms": 100,
        "lists": results,
    }


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="provision,place,list", help="which parts to run")
    parser.add_argument("--sizes", default="100,1000", help="VMs per provisioning run")
    parser.add_argument("--hosts", type=int, default=4, help="simulated hosts, one worker process each")
    parser.add_argument("--users", type=int, default=20, help="researchers sending requests, a project each")
    parser.add_argument("--clients", type=int, default=16, help="threads sending requests together")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--place-sizes", default="100,1000,10000")
    parser.add_argument("--list-hosts", type=int, default=2000)
    parser.add_argument("--list-instances", type=int, default=40000)
    parser.add_argument("--list-projects", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=50, help="timed runs of each list query and placement")
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith(("postgres://", "postgresql://")) or not broker.startswith("redis://"):
        sys.exit(
            "Set DATABASE_URL to a PostgreSQL database and CELERY_BROKER_URL to a Redis database (both are "
            "emptied), e.g. postgres://postgres@127.0.0.1:5432/alto_bench_prov and redis://127.0.0.1:6379/4"
        )
    os.environ.setdefault("CELERY_RESULT_BACKEND", broker)
    recreate_database(url)
    flush_redis(broker)
    var_dir = Path(tempfile.mkdtemp(prefix="alto-bench-prov-"))
    os.environ["SECRET_KEY"] = uuid.uuid4().hex * 2
    setup_django(var_dir)

    from django.conf import settings
    from django.db import connection

    from marketplace import signing

    try:
        parts = set(args.parts.split(","))
        site = Site(var_dir, hosts=args.hosts, users=args.users)
        report: dict = {
            "database": connection.vendor,
            "server_version": connection.pg_version,
            "broker": broker,
            "cpus": os.cpu_count(),
            "simulated_hosts": args.hosts,
            "worker_processes": args.hosts,
            "web_workers": args.web_workers,
        }
        if "provision" in parts:
            procs = Processes(var_dir, hosts=site.hosts, web_workers=args.web_workers)
            try:
                report["provision"] = measure_provision(
                    site, procs, [int(s) for s in args.sizes.split(",")], args.clients
                )
            finally:
                procs.stop()
        if "place" in parts:
            report["place"] = measure_place(
                site, [int(s) for s in args.place_sizes.split(",")], args.repeat, min(args.clients, 8)
            )
        if "list" in parts:
            report["list"] = measure_list(
                site,
                hosts=args.list_hosts,
                instances=args.list_instances,
                projects=args.list_projects,
                repeat=args.repeat,
            )
    finally:
        # The keyring's gpg-agent (started by gpg for the product's verifications) and the temporary files.
        signing.shutdown_agent(Path(settings.MARKETPLACE_GNUPG_HOME))
        shutil.rmtree(var_dir, ignore_errors=True)
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
