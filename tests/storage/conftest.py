"""Fixtures for the storage tests: the Marketplace's real keys and signing helpers (tests/marketplace), a real
HTTP server on 127.0.0.1 serving real image files, and images published with real signed entries."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

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

STALL_SECONDS = 30  # a stalling answer is released at the end of the test, long before this


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
    """``publish(content, locations=[…], compression="", checksums=None)``: the owner signs and uploads an entry
    for ``content`` (the image's uncompressed bytes) with those locations; returns the identifier."""
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
    ) -> str:
        document = metadata.build(
            image_bytes=len(content),
            checksums=checksums or checksums_of(content),
            type="base",
            title="Test image",
            os="Ubuntu",
            os_arch="x86_64",
            kind="machine",
            format="raw",
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
