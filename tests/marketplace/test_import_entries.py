"""``manage.py import_entries``: bulk import from a directory, a tar archive or another Marketplace's API pages,
with the same verification as an upload; known entries skipped, refused ones counted by rule; a stranger's server
kept within bounds."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from lxml import etree

from marketplace.downloads import PAGE_NS
from marketplace.models import Endorser, Entry, Image
from tests.marketplace.conftest import IMAGE, OTHER_IMAGE, T0

pytestmark = pytest.mark.django_db

HOUR = dt.timedelta(hours=1)
ENTRIES = "/api/v1/marketplace/entries/"


def run(source: str, *args: str) -> str:
    out = io.StringIO()
    call_command("import_entries", source, "--jobs", "1", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def documents(owner, registered, entry_for) -> dict[str, bytes]:
    """Good entries (a timeline of two for one image, one for another), a tampered one, one that is not metadata,
    one signed by a key nobody registered, and a copy of a good one."""
    registered(owner, "owner")
    newer = entry_for("owner", at=T0 + HOUR, title="Ubuntu 24.04.1")
    tampered = entry_for("owner", image=OTHER_IMAGE, at=T0 + 2 * HOUR).replace(b"Ubuntu", b"Windows", 1)
    return {
        "a-newer.xml": newer,  # sorts before its older entry by name: the import orders timelines by time
        "b-older.xml": entry_for("owner", at=T0),
        "c-other.xml": entry_for("owner", image=OTHER_IMAGE, os="Debian", at=T0),
        "d-tampered.xml": tampered,
        "e-not-metadata.xml": b"<html><body>hello</body></html>",
        "f-stranger.xml": entry_for("staff", image=OTHER_IMAGE, at=T0),
        "copies/a-newer.xml": newer,
    }


def write_tree(root: Path, documents: dict[str, bytes]) -> Path:
    for name, raw in documents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(raw)
    return root


def summary_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("Imported from"))


def test_a_directory_is_imported_refusing_bad_entries_by_rule_and_skipping_known_ones(documents, tmp_path):
    output = run(str(write_tree(tmp_path, documents)))
    assert "3 accepted, 1 already known, 3 refused." in summary_line(output)
    assert "refused bad-signature: 1 (first: d-tampered.xml:" in output
    assert "refused unknown-key: 1 (first: f-stranger.xml:" in output
    assert "e-not-metadata.xml" in output
    assert Entry.objects.count() == 3
    latest = Entry.objects.get(image__identifier=IMAGE.identifier, is_latest=True)
    assert latest.title == "Ubuntu 24.04.1" and bytes(latest.raw) == documents["a-newer.xml"]
    assert Image.objects.get(identifier=OTHER_IMAGE.identifier).verdict == "allowed"

    again = run(str(tmp_path))
    assert "0 accepted, 4 already known, 3 refused." in summary_line(again)
    assert Entry.objects.count() == 3

    # A changed copy of a known entry is no known entry: it is verified, and refused.
    (tmp_path / "g-changed-copy.xml").write_bytes(documents["a-newer.xml"].replace(b"24.04.1", b"24.04.9"))
    changed = run(str(tmp_path))
    assert "0 accepted, 4 already known, 4 refused." in summary_line(changed)
    assert "refused bad-signature: 2" in changed


def test_a_changed_copy_read_before_the_known_entry_is_still_refused(documents, tmp_path):
    run(str(write_tree(tmp_path / "first", {"a.xml": documents["b-older.xml"]})))
    changed = documents["b-older.xml"].replace(b"Ubuntu", b"Ubuntv", 1)
    output = run(
        str(write_tree(tmp_path / "second", {"a-changed.xml": changed, "b-known.xml": documents["b-older.xml"]}))
    )
    assert "0 accepted, 1 already known, 1 refused." in summary_line(output)
    assert "refused bad-signature: 1 (first: a-changed.xml:" in output


def test_a_tar_archive_is_read_in_memory_refusing_links_and_oversized_members(documents, tmp_path, settings):
    settings.MARKETPLACE_MAX_ENTRY_BYTES = 64 * 1024
    archive = tmp_path / "entries.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, raw in documents.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        link = tarfile.TarInfo("../../etc/passwd.xml")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        huge = tarfile.TarInfo("huge.xml")
        huge.size = 64 * 1024 + 1
        tar.addfile(huge, io.BytesIO(b" " * huge.size))
    output = run(str(archive))
    assert "3 accepted, 1 already known, 5 refused." in summary_line(output)
    assert "refused not-a-file: 1" in output and "refused too-large: 1" in output
    assert not (tmp_path.parent / "etc").exists()


def test_a_source_that_is_not_a_directory_archive_or_web_url_is_refused(tmp_path):
    for source in ("ftp://example.org/entries/", "file:///etc/passwd", str(tmp_path / "missing")):
        with pytest.raises(CommandError, match="neither a directory"):
            run(source)
    (tmp_path / "not-a-tar").write_bytes(b"plain text")
    with pytest.raises(CommandError, match="not a readable tar archive"):
        run(str(tmp_path / "not-a-tar"))


def test_the_entries_api_serves_pages_of_signed_documents_oldest_first(documents, owner, api):
    from marketplace import services

    for name in ("b-older.xml", "a-newer.xml", "c-other.xml"):
        services.entry_upload(raw=documents[name], uploader=owner)
    first = api.get(ENTRIES, {"format": "xml", "page_size": 2})
    assert first.status_code == 200 and first["Content-Type"] == "application/xml"
    assert first["X-Content-Type-Options"] == "nosniff"
    page = etree.fromstring(first.content)
    served = [base64.b64decode(e.text) for e in page.iterchildren(f"{{{PAGE_NS}}}entry")]
    assert served == [documents["b-older.xml"], documents["a-newer.xml"]]
    following = api.get(page.get("next"))
    last = etree.fromstring(following.content)
    assert [base64.b64decode(e.text) for e in last] == [documents["c-other.xml"]]
    assert last.get("next") is None
    as_json = api.get(ENTRIES).json()
    assert [e["title"] for e in as_json["results"]][:2] == ["Ubuntu 24.04 LTS", "Ubuntu 24.04.1"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_entries_are_replicated_from_another_marketplace_through_its_xml_pages(documents, owner, live_server):
    from marketplace import services

    for name in ("b-older.xml", "a-newer.xml", "c-other.xml"):
        services.entry_upload(raw=documents[name], uploader=owner)
    # This Marketplace forgets them in a transaction it has not committed; the live server (another connection)
    # still serves them: a second Marketplace holding entries that this one lacks.
    with transaction.atomic():
        Entry.objects.all().delete()
        Image.objects.all().delete()
        Endorser.objects.all().delete()
        output = run(live_server.url, "--page-size", "2")
        assert "3 accepted, 0 already known, 0 refused." in summary_line(output)
        assert sorted(bytes(e.raw) for e in Entry.objects.all()) == sorted(
            documents[n] for n in ("b-older.xml", "a-newer.xml", "c-other.xml")
        )
        again = run(live_server.url, "--page-size", "2")
        assert "0 accepted, 3 already known, 0 refused." in summary_line(again)
        transaction.set_rollback(True)


# --- A stranger's server ----------------------------------------------------------------------------------------


class Hostile(http.server.BaseHTTPRequestHandler):
    """Answers each path with what a hostile or broken Marketplace might send."""

    def log_message(self, *args) -> None:
        pass

    def send(
        self, status: int, body: bytes, content_type: str = "application/xml", *, length: bool = True, **headers: str
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length:  # else the body ends when the connection closes (HTTP/1.0): only reading tells its size
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        first = self.path.split("/")[1]
        page = f'<entries xmlns="{PAGE_NS}"{{}}></entries>'
        if first == "huge":
            self.send(200, page.format("").encode() + b" " * 4096, length=False)
        elif first == "announced":
            self.send(200, page.format("").encode() + b" " * 4096)
        elif first == "redirect":
            self.send(302, b"", Location="http://169.254.169.254/latest/meta-data/")
        elif first == "elsewhere":
            self.send(200, page.format(' next="http://169.254.169.254/latest/"').encode())
        elif first == "loop":
            self.send(200, page.format(f" next={quoteattr(self.path)}").encode())
        elif first == "entities":
            body = f'<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]><entries xmlns="{PAGE_NS}">&x;</entries>'
            self.send(200, body.encode())
        elif first == "html":
            self.send(200, b"<html></html>", "text/html")
        else:
            self.send(404, b"")


@pytest.fixture
def hostile() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("path", "refusal"),
    [
        ("/huge/api/v1/marketplace/entries/", "larger than 1024 bytes"),
        ("/announced/api/v1/marketplace/entries/", r"announces a \d+-byte page"),
        ("/redirect/api/v1/marketplace/entries/", "leaves the server the import started from"),
        ("/elsewhere/api/v1/marketplace/entries/", "leaves the server the import started from"),
        ("/loop/api/v1/marketplace/entries/", "sent the page .* twice"),
        ("/entities/api/v1/marketplace/entries/", "not a page of Marketplace entries"),
        ("/html/api/v1/marketplace/entries/", "text/html, not XML"),
        ("/gone/api/v1/marketplace/entries/", "HTTP 404"),
    ],
)
def test_a_hostile_server_is_refused_with_the_broken_rule(hostile, path, refusal):
    with pytest.raises(CommandError, match=refusal):
        run(f"{hostile}{path}", "--max-page-bytes", "1024")
    assert not Entry.objects.exists()
