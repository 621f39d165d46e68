"""What the image list tests need from the outside: HEPiX image lists signed as S/MIME the way hepixvmitrust signs
them (detached ``multipart/signed``, made here with cryptography's PKCS#7 builder and a test CA), and a real
local HTTP server (stdlib ``http.server`` in a thread) serving lists and images, including hostile answers."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from tests.marketplace.x509_ca import NOW, Credential


def grid_dn(text: str) -> str:
    """An RFC 4514 DN (``CN=Jo,O=Lab,C=FR``) in the grid's slash form (``/C=FR/O=Lab/CN=Jo``), as lists write it."""
    return "/" + "/".join(reversed(text.split(",")))


def date(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ListImage:
    """An image of a test list: its bytes (served by the test server) and what the list says about it."""

    content: bytes
    title: str
    identifier: str = field(default_factory=lambda: str(uuid.uuid4()))
    version: str = "1"

    @property
    def sha512(self) -> str:
        return hashlib.sha512(self.content).hexdigest()

    @property
    def marketplace_identifier(self) -> str:
        from marketplace import metadata

        return metadata.identifier_from_sha1(hashlib.sha1(self.content, usedforsecurity=False).hexdigest())

    def as_json(self, base_url: str, **overrides: Any) -> dict[str, Any]:
        body = {
            "dc:identifier": self.identifier,
            "dc:title": self.title,
            "dc:description": f"{self.title}, contextualised for the grid",
            "hv:uri": f"{base_url}/images/{self.identifier}.img",
            "hv:size": len(self.content),
            "sl:checksum:sha512": self.sha512,
            "hv:version": self.version,
            "hv:hypervisor": "kvm",
            "hv:format": "raw",
            "sl:arch": "x86_64",
            "sl:os": "Linux",
            "sl:osversion": "AlmaLinux 9",
            "sl:comments": "",
        }
        body.update(overrides)
        return {"hv:image": body}


def imagelist(
    credential: Credential,
    images: list[dict[str, Any]],
    *,
    identifier: str,
    version: str = "1",
    created: dt.datetime | None = None,
    expires: dt.datetime | None = None,
    email: str | None = None,
    dn: str | None = None,
    ca: str | None = None,
) -> dict[str, Any]:
    """An ``hv:imagelist`` endorsed by ``credential`` (its DN and CA in the grid's slash form)."""
    created = created or NOW - dt.timedelta(hours=1)
    return {
        "hv:imagelist": {
            "dc:identifier": identifier,
            "dc:title": "Test VO images",
            "dc:description": "Images endorsed for the test VO",
            "dc:source": "vo.example.org",
            "dc:date:created": date(created),
            "dc:date:expires": date(expires or created + dt.timedelta(days=28)),
            "hv:uri": "https://vo.example.org/image.list",
            "hv:version": version,
            "hv:endorser": {
                "hv:x509": {
                    "dc:creator": "VO Manager",
                    "hv:ca": ca if ca is not None else grid_dn(credential.issuer),
                    "hv:dn": dn if dn is not None else grid_dn(credential.subject),
                    "hv:email": email if email is not None else "vo-manager@vo.example.org",
                }
            },
            "hv:images": images,
        }
    }


def smime_sign(
    content: bytes, credential: Credential, *, also: Credential | None = None, detached: bool = True, text: bool = False
) -> bytes:
    """``content`` signed as an S/MIME message with the credential's certificate: detached (``multipart/signed``,
    as hepixvmitrust signs; ``text``: in text mode, a ``text/plain`` header signed with the content) or opaque
    (``application/pkcs7-mime``); ``also`` adds a second signer."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content)
    for signer in (credential, also) if also is not None else (credential,):
        builder = builder.add_signer(signer.certificate, signer.key, hashes.SHA256())
    for certificate in credential.chain:
        builder = builder.add_certificate(certificate)
    if detached:
        options = [pkcs7.PKCS7Options.DetachedSignature] + ([pkcs7.PKCS7Options.Text] if text else [])
        return builder.sign(Encoding.SMIME, options)
    # cryptography writes S/MIME only as multipart/signed: the opaque form is the DER SignedData in base64.
    headers = (
        b'MIME-Version: 1.0\r\nContent-Disposition: attachment; filename="smime.p7m"\r\n'
        b'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return headers + base64.encodebytes(builder.sign(Encoding.DER, []))


def signed_list(document: dict[str, Any], credential: Credential) -> bytes:
    return smime_sign(json.dumps(document, indent=2).encode(), credential)


Route = bytes | Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Server:
    """A local HTTP server: ``routes`` maps a path to the bytes it serves (or to a handler of its own)."""

    base_url: str
    routes: dict[str, Route]
    requests: list[str]

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def serve_images(self, *images: ListImage) -> None:
        for image in images:
            self.routes[f"/images/{image.identifier}.img"] = image.content


def endless(handler: BaseHTTPRequestHandler) -> None:
    """A body that never ends (chunked, with no length): the client must stop reading."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.end_headers()
    try:
        for _ in range(100_000):
            handler.wfile.write(b"x" * 65536)
            time.sleep(0)
    except (BrokenPipeError, ConnectionResetError):
        return


@contextmanager
def http_server() -> Iterator[Server]:
    routes: dict[str, Route] = {}
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            route = routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            if callable(route):
                route(self)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(route)))
            self.end_headers()
            self.wfile.write(route)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{server.server_address[1]}", routes, requests)
    finally:
        server.shutdown()
        server.server_close()
