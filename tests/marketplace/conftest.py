"""Fixtures for the Marketplace tests: real gpg keys made once per session, a fresh trusted keyring per
test, and helpers that build and sign entries the way a creator's tools do."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from knox.models import AuthToken

from marketplace import metadata, signing
from tests.marketplace.keys import (  # noqa: F401 - fixtures of the format/signature tests, shared
    creator_key,
    endorser_key,
    pgp_keys,
    signed_entry,
    untrusted_key,
)

# Keys are dated 2020 so that entries can be dated anywhere from then on (a signature may not predate its key).
KEY_BIRTH = "20200101T000000"
T0 = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class TestKey:
    """A signing key held in the session's private keyring."""

    home: Path
    fingerprint: str
    email: str
    armored: str
    secret_armored: str

    def sign(self, document: bytes, *, at: dt.datetime = T0, email: str | None = None) -> bytes:
        return signing.sign(document, gnupghome=self.home, fingerprint=self.fingerprint, email=email, now=at)

    def sign_payload(self, endorsed: bytes) -> bytes:
        """Sign an already endorsed document as it stands, bypassing ``signing.sign``'s own checks (for
        the refusals that a well-behaved tool would never produce)."""
        payload = metadata.signed_bytes(endorsed)
        process = subprocess.run(
            [*_gpg(self.home), "--local-user", self.fingerprint, "--armor", "--detach-sign"],
            input=payload,
            capture_output=True,
            check=True,
        )
        return metadata.attach_signature(endorsed, process.stdout.decode())


def _gpg(home: Path) -> list[str]:
    return ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]


def _make_key(home: Path, uids: list[str]) -> TestKey:
    base = _gpg(home)
    subprocess.run(
        [*base, "--faked-system-time", f"{KEY_BIRTH}!", "--quick-gen-key", uids[0], "ed25519", "sign", "never"],
        check=True,
        capture_output=True,
    )
    listing = subprocess.run([*base, "--with-colons", "--list-keys", uids[0]], check=True, capture_output=True)
    fingerprint = next(
        line.split(":")[9] for line in listing.stdout.decode().splitlines() if line.startswith("fpr:")
    ).upper()
    for uid in uids[1:]:
        subprocess.run([*base, "--quick-add-uid", fingerprint, uid], check=True, capture_output=True)
    armored = subprocess.run([*base, "--armor", "--export", fingerprint], check=True, capture_output=True)
    secret = subprocess.run([*base, "--armor", "--export-secret-keys", fingerprint], check=True, capture_output=True)
    email = uids[0].split("<")[1].rstrip(">")
    return TestKey(home, fingerprint, email, armored.stdout.decode(), secret.stdout.decode())


@pytest.fixture(scope="session")
def keyring(tmp_path_factory) -> Iterator[dict[str, TestKey]]:
    """Secret keys of the cast: owner, outsider, staff (each with the account's e-mail), and a key
    carrying two user IDs."""
    home = tmp_path_factory.mktemp("signer-gnupg")
    home.chmod(0o700)
    keys = {
        "owner": _make_key(home, ["Olivia Owner <owner@example.org>"]),
        "outsider": _make_key(home, ["Oscar Outsider <outsider@example.org>"]),
        "staff": _make_key(home, ["Site Security <staff@example.org>"]),
        "twouid": _make_key(home, ["Tess Two <twouid@example.org>", "Tess Elsewhere <elsewhere@example.org>"]),
    }
    yield keys
    signing.shutdown_agent(home)


@pytest.fixture(autouse=True)
def trusted_keyring(settings, tmp_path) -> Path:
    """Each test trusts only the keys it registers."""
    settings.MARKETPLACE_GNUPG_HOME = tmp_path / "trusted-gnupg"
    return settings.MARKETPLACE_GNUPG_HOME


@dataclass(frozen=True)
class Image:
    content: bytes

    @property
    def checksums(self) -> dict[str, str]:
        return {"SHA-1": hashlib.sha1(self.content).hexdigest(), "SHA-256": hashlib.sha256(self.content).hexdigest()}  # noqa: S324

    @property
    def identifier(self) -> str:
        return metadata.identifier_from_sha1(self.checksums["SHA-1"])


IMAGE = Image(b"ubuntu 24.04 root filesystem")
OTHER_IMAGE = Image(b"debian 12 root filesystem")


def unsigned_entry(image: Image = IMAGE, **fields) -> bytes:
    defaults = {
        "type": "base",
        "title": "Ubuntu 24.04 LTS",
        "description": "Minimal cloud image with cloud-init.",
        "os": "Ubuntu",
        "os_version": "24.04",
        "os_arch": "x86_64",
        "kind": "machine",
        "format": "qcow2",
        "locations": ("https://images.example.org/ubuntu-24.04.qcow2",),
    }
    return metadata.build(image_bytes=len(image.content), checksums=image.checksums, **{**defaults, **fields})


@pytest.fixture(scope="session")
def _signed_cache() -> dict:
    return {}


@pytest.fixture
def entry_for(keyring, _signed_cache) -> Callable[..., bytes]:
    """``entry_for("owner", at=…, image=…, **fields)``: a signed entry as that key's holder makes it.

    Signatures depend only on the document and the key, so each distinct one is made once per session."""

    def make(name: str, *, at: dt.datetime = T0, image: Image = IMAGE, **fields) -> bytes:
        cache_key = (name, at, image, tuple(sorted(fields.items())))
        if cache_key not in _signed_cache:
            _signed_cache[cache_key] = keyring[name].sign(unsigned_entry(image, **fields), at=at)
        return _signed_cache[cache_key]

    return make


@pytest.fixture
def registered(keyring) -> Callable:
    """``registered(user, "owner")``: register that key to ``user`` through the service."""
    from marketplace import services

    def register(user, name: str):
        return services.pgp_key_register(actor=user, armored=keyring[name].armored)

    return register


@pytest.fixture
def token_client(api):
    """``token_client(user)``: the API client carrying a knox token of ``user``."""

    def login(user):
        _instance, token = AuthToken.objects.create(user)
        api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        return api

    return login
