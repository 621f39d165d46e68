"""Fixtures for the storage tests: the Marketplace's real keys and signing helpers (tests/marketplace), a real
HTTP server on 127.0.0.1 serving real image files, and images published with real signed entries."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from marketplace import metadata
from tests.marketplace.conftest import (  # noqa: F401 - fixtures shared with the marketplace tests
    T0,
    _signed_cache,
    keyring,
    outsider,
    owner,
    registered,
    trusted_keyring,
)
from tests.marketplace.keys import pgp_keys  # noqa: F401 - the session's real OpenPGP keys

STALL_SECONDS = 30
MIB = 1024**2
# A small dataset disk: 3 MiB, the pattern 0x5a in its second MiB.
DATASET = (
    b"\0" * MIB + b"\x5a" * MIB + b"\0" * MIB
)  # a stalling answer is released at the end of the test, long before this


@dataclass
class Route:
    """What the server answers on one path: ``body`` (as is), or a redirect, a stall, an endless body or a status."""

    body: bytes = b""
    status: int = 200
    redirect: str = ""
    stall: bool = False
    endless: bool = False
    trickle: bool = False  # a little at a time, each piece well within the read timeout
    gate: threading.Event | None = None  # the answer waits until the test opens it


@dataclass
class ImageServer:
    """A real ``http.server`` on 127.0.0.1 in a thread; ``hits`` counts the requests each path received."""

    base: str
    routes: dict[str, Route] = field(default_factory=dict)
    hits: Counter = field(default_factory=Counter)
    release: threading.Event = field(default_factory=threading.Event)

    def serve(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.base + path


def _handler(server: ImageServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - quiet test output
            pass

        def do_GET(self):  # noqa: N802 - http.server's name
            server.hits[self.path] += 1
            route = server.routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            if route.redirect:
                self.send_response(302)
                self.send_header("Location", route.redirect)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if route.status != 200:
                self.send_error(route.status)
                return
            if route.gate is not None:
                route.gate.wait(STALL_SECONDS)
            self.send_response(200)
            if not route.endless:
                self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            try:
                if route.stall:
                    self.wfile.write(route.body[: len(route.body) // 2])
                    self.wfile.flush()
                    server.release.wait(STALL_SECONDS)
                    return
                if route.trickle:
                    for start in range(0, len(route.body), 1024):
                        self.wfile.write(route.body[start : start + 1024])
                        self.wfile.flush()
                        if server.release.wait(0.1):
                            return
                    return
                self.wfile.write(route.body)
                if route.endless:  # a hostile server that never stops (bounded here only to end the test)
                    for _ in range(2000):
                        self.wfile.write(b"\0" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), None)  # type: ignore[arg-type]
    httpd.daemon_threads = True
    server = ImageServer(base=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.RequestHandlerClass = _handler(server)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture
def cache_settings(settings, tmp_path):
    """A cache directory of the test's own, an allowed file: directory, and short bounds."""
    settings.IMAGE_CACHE_DIR = tmp_path / "image-cache"
    settings.MARKETPLACE_FILE_LOCATION_DIRS = [str(tmp_path / "images")]
    (tmp_path / "images").mkdir()
    settings.IMAGE_DOWNLOAD_TIMEOUT = 30
    settings.IMAGE_DOWNLOAD_IO_TIMEOUT = 2
    return settings


def checksums_of(content: bytes) -> dict[str, str]:
    return {"SHA-1": hashlib.sha1(content).hexdigest(), "SHA-256": hashlib.sha256(content).hexdigest()}  # noqa: S324


@pytest.fixture
def publish(db, cache_settings, owner, registered, keyring) -> Callable[..., str]:  # noqa: F811 - imported fixtures
    """``publish(content, locations=[…], compression="", checksums=None, kind="machine", format="raw")``: the owner
    signs and uploads an entry for ``content`` (the image's uncompressed bytes) with those locations; returns the
    identifier."""
    from marketplace import services

    registered(owner, "owner")

    def make(
        content: bytes,
        *,
        locations,
        compression: str = "",
        checksums: dict[str, str] | None = None,
        signer: str = "owner",
        uploader=None,
        kind: str = "machine",
        format: str = "raw",  # noqa: A002 - the entry's field
    ) -> str:
        document = metadata.build(
            image_bytes=len(content),
            checksums=checksums or checksums_of(content),
            type="base",
            title="Test image",
            os="Ubuntu",
            os_arch="x86_64",
            kind=kind,
            format=format,
            compression=compression,
            locations=tuple(locations),
        )
        entry = services.entry_upload(raw=keyring[signer].sign(document, now=T0), uploader=uploader or owner)
        return entry.image.identifier

    return make


@pytest.fixture
def volume_settings(settings, tmp_path):
    """Volumes in directories of the test's own, on the file backend (the iSCSI tests add theirs)."""
    settings.STORAGE_FILE_DIR = tmp_path / "volumes"
    settings.ISCSI_DIR = tmp_path / "iscsi"
    settings.STORAGE_BACKENDS = ["file"]
    settings.STORAGE_DEFAULT_BACKEND = "file"
    settings.STORAGE_FILE_FORMAT = "qcow2"
    settings.ISCSI_IQN_DOMAIN = "org.example"
    settings.ISCSI_CHAP = False
    return settings


# --- a real tgtd (RUNBOOK: iSCSI) --------------------------------------------------------------------------


@dataclass
class Tgtd:
    """A tgtd of the test session's own: its control port (``tgtadm -C``; a socket in /var/run/tgtd) and iSCSI
    portal on 127.0.0.1 are chosen for this process, so parallel test runs and other worktrees never meet it."""

    control_port: int
    port: int
    log: Path
    process: subprocess.Popen | None = None

    @property
    def portal(self) -> str:
        return f"127.0.0.1:{self.port}"

    def tgtadm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["tgtadm", "-C", str(self.control_port), "--lld", "iscsi", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
        )

    def start(self) -> None:
        Path("/var/run/tgtd").mkdir(parents=True, exist_ok=True)  # its control socket's home
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                ["tgtd", "-f", "-C", str(self.control_port), "--iscsi", f"portal={self.portal}"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while self.tgtadm("--mode", "target", "--op", "show", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tgtd did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def stop(self, *, crash: bool = False) -> None:
        """Stop tgtd the way its tools do (``tgtadm --op delete --mode system``; it ignores SIGTERM), or, with
        ``crash``, kill it as a crash would."""
        if self.process is None:
            return
        if self.process.poll() is None and not crash:
            self.tgtadm("--mode", "system", "--op", "delete", check=False)
            with contextlib.suppress(subprocess.TimeoutExpired):  # then it is killed below
                self.process.wait(timeout=10)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        """What a crash and a restart do: tgtd comes back with no targets."""
        self.stop(crash=True)
        self.start()

    def targets(self) -> list[tuple[int, str]]:
        shown = self.tgtadm("--mode", "target", "--op", "show").stdout
        return [(int(m[1]), m[2]) for m in re.finditer(r"^Target (\d+): (\S+)$", shown, re.MULTILINE)]

    def clear(self) -> None:
        for tid, _iqn in self.targets():
            self.tgtadm("--mode", "target", "--op", "delete", "--force", "--tid", str(tid))
        accounts = self.tgtadm("--mode", "account", "--op", "show").stdout.splitlines()[1:]
        for user in (line.split()[0] for line in accounts if line.strip()):
            self.tgtadm("--mode", "account", "--op", "delete", "--user", user, check=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def tgtd_session(tmp_path_factory) -> Iterator[Tgtd]:
    if shutil.which("tgtd") is None or shutil.which("tgtadm") is None:
        pytest.skip("needs tgt (tgtd, tgtadm): make test installs it")
    if os.geteuid() != 0:
        pytest.skip("tgtd needs root (its control socket lives in /var/run/tgtd)")
    # "s11s" + this process: a control socket no other run uses.
    daemon = Tgtd(
        control_port=11_000 + os.getpid() % 20_000,  # tgtd takes 0 to 32767
        port=_free_port(),
        log=tmp_path_factory.mktemp("s11s-tgtd") / "tgtd.log",
    )
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def tgtd(tgtd_session, volume_settings) -> Iterator[Tgtd]:
    """The session's tgtd, running, with no targets; the settings point the iSCSI backend at it."""
    if tgtd_session.process is None or tgtd_session.process.poll() is not None:
        tgtd_session.start()
    tgtd_session.clear()
    volume_settings.ISCSI_CONTROL_PORT = tgtd_session.control_port
    volume_settings.ISCSI_PORTAL = tgtd_session.portal
    volume_settings.ISCSI_INITIATORS = ["ALL"]
    volume_settings.STORAGE_BACKENDS = ["file", "iscsi"]
    yield tgtd_session
    if tgtd_session.process is not None and tgtd_session.process.poll() is None:
        tgtd_session.clear()


@pytest.fixture
def disk_image(publish, cache_settings, tmp_path) -> str:
    """A signed ``disk`` image whose file: location is in the allowed directory; its identifier."""
    path = tmp_path / "images" / "dataset.raw"
    path.write_bytes(DATASET)
    return publish(DATASET, locations=[path.as_uri()], kind="disk")


@pytest.fixture(autouse=True)
def volume_tasks_sent(request, monkeypatch) -> list[tuple[str, int]]:
    """Storage tasks sent by the code under test, as (``create``/``delete``, volume id), instead of the broker:
    a session's worker (started by an end-to-end test) must not make or delete the volumes of other tests behind
    their backs. Tests marked ``worker`` send them for real."""
    sent: list[tuple[str, int]] = []
    if request.node.get_closest_marker("worker") is None:
        from storage import services

        monkeypatch.setattr(services, "_enqueue", lambda task_name, volume_id: sent.append((task_name, volume_id)))
    return sent
