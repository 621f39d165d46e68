"""Demo Marketplace content for ``seed_demo``: a creator's key and a few signed entries for small image
files it writes under ``var/demo-images/``, so that ``make run`` shows a Marketplace with real signed
entries, a deprecated one and a site endorsement. Everything goes through the normal services."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from marketplace import metadata, services, signing
from marketplace.models import Image, PgpKey

CREATOR_KEY_PASSPHRASE = "creator-demo-key"  # noqa: S105 - a demo key in a demo keyring


@dataclass(frozen=True)
class DemoImage:
    filename: str
    title: str
    description: str
    os: str
    os_version: str
    kind: str
    deprecated: str | None = None
    site_endorsed: bool = False


DEMO_IMAGES = [
    DemoImage(
        "ubuntu-24.04-base.img", "Ubuntu 24.04 LTS base", "Minimal server with cloud-init.", "Ubuntu", "24.04",
        "machine", site_endorsed=True,
    ),
    DemoImage(
        "debian-12-grid.img", "Debian 12 grid worker", "Worker node with CVMFS and HTCondor.", "Debian", "12",
        "machine",
    ),
    DemoImage(
        "centos-7-legacy.img", "CentOS 7 legacy base", "Kept for old pipelines.", "CentOS", "7", "machine",
        deprecated="CentOS 7 reached end of life; use the Debian 12 or Ubuntu 24.04 images.",
    ),
    DemoImage(
        "reference-genomes.img", "Reference genomes (disk)", "Read-only data disk of reference genomes.", "", "",
        "disk",
    ),
]  # fmt: skip


def _image_file(directory: Path, demo: DemoImage) -> Path:
    """A small, deterministic image file: its checksums, and so its identifier, are the same every run."""
    path = directory / demo.filename
    if not path.exists():
        line = f"Altostratus demo image {demo.filename}: {demo.title}\n".encode()
        path.write_bytes(line * (65536 // len(line) + 1))
    return path


def _signed(document: bytes, *, home: Path, key: signing.KeyInfo, now: dt.datetime) -> bytes:
    """``document`` signed with the creator's demo key; gpg's refusals and failures as application errors."""
    with services.gpg_errors():
        return signing.sign(
            document, gnupghome=home, fingerprint=key.fingerprint, passphrase=CREATOR_KEY_PASSPHRASE, now=now
        )


def marketplace_demo_seed(*, creator: Any, staff: Any) -> list[Image]:
    """Register ``creator``'s demo key and upload the demo entries that are not there yet."""
    var_dir = Path(settings.VAR_DIR)
    home = var_dir / "demo-creator-gnupg"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    with services.gpg_errors():
        key = signing.secret_key_find(gnupghome=home, email=creator.email)
        if key is None:
            name = creator.get_full_name() or creator.get_username()
            key = signing.key_generate(
                gnupghome=home, name=name, email=creator.email, passphrase=CREATOR_KEY_PASSPHRASE
            )
    if not PgpKey.objects.filter(fingerprint=key.fingerprint).exists():
        services.pgp_key_register(actor=creator, armored=key.armored)

    images_dir = var_dir / "demo-images"
    images_dir.mkdir(parents=True, exist_ok=True)
    created: list[Image] = []
    # Endorsement times are whole seconds, after the key was made; a few seconds ahead of the clock at most.
    start = max(dt.datetime.now(dt.UTC).replace(microsecond=0), key.created + dt.timedelta(seconds=1))
    for index, demo in enumerate(DEMO_IMAGES):
        path = _image_file(images_dir, demo)
        size, checksums = metadata.file_checksums(path)
        if Image.objects.filter(identifier=metadata.identifier_from_sha1(checksums["SHA-1"])).exists():
            continue
        when = start + dt.timedelta(seconds=2 * index)
        fields = {
            "type": "base" if demo.kind == "machine" else "data",
            "title": demo.title,
            "description": demo.description,
            "creator": creator.get_full_name(),
            "os": demo.os,
            "os_version": demo.os_version,
            "os_arch": "x86_64" if demo.kind == "machine" else "",
            "kind": demo.kind,
            "format": "raw",
            "locations": [path.as_uri()],
            "valid": when + dt.timedelta(days=365),
        }
        document = metadata.build(image_bytes=size, checksums=checksums, **fields)
        signed = _signed(document, home=home, key=key, now=when)
        entry = services.entry_upload(raw=signed, uploader=creator)
        if demo.deprecated:
            document = metadata.build(image_bytes=size, checksums=checksums, deprecated=demo.deprecated, **fields)
            signed = _signed(document, home=home, key=key, now=when + dt.timedelta(seconds=1))
            services.entry_upload(raw=signed, uploader=creator)
        if demo.site_endorsed:
            services.image_site_endorse(actor=staff, image=entry.image)
        created.append(entry.image)
    return created
