"""Real OpenPGP keys for the format and signature tests, generated once per session with the real gpg.

Imported into ``tests/marketplace/conftest.py``. The fixtures other tests may use:

- ``creator_key``: a key trusted for the test (in the keyring ``settings.MARKETPLACE_GNUPG_HOME``), with a
  second user ID; ``.fingerprint``, ``.gnupghome``, ``.email``, ``.uid``, ``.armored``, ``.sign(doc, …)``;
- ``endorser_key``: a second trusted key (a site security officer);
- ``untrusted_key``: a key that is never imported into the trusted keyring;
- ``signed_entry(**fields)``: a signed entry (bytes) made with ``creator_key`` unless ``key=`` says otherwise;
  each call describes a new image unless ``checksums`` or ``sha1`` is given.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from marketplace import metadata, signing

# Keys are born in 2020 (gpg's faked clock) so that tests may date entries anywhere from then on.
KEY_BIRTH = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
CREATOR_UID = "Casey Creator <creator@example.org>"
CREATOR_SECOND_UID = "Casey at the Lab <Casey.C@lab.example.net>"
ENDORSER_UID = "Sam Security <security@example.org>"
UNTRUSTED_UID = "Mallory Outsider <mallory@example.org>"
EXPIRING_UID = "Eve Expiring <eve@example.org>"


def gpg_argv(home: Path, *, at: dt.datetime | None = None) -> list[str]:
    """The gpg command line for a test keyring (no passphrase prompts; optionally gpg's clock frozen at ``at``)."""
    argv = ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]
    if at is not None:
        argv += ["--faked-system-time", f"{int(at.timestamp())}!"]
    return argv


@dataclass(frozen=True)
class PgpKey:
    """A key whose secret half lives in ``gnupghome``; ``armored`` is its public half."""

    gnupghome: Path
    fingerprint: str
    uid: str
    email: str
    armored: str

    def sign(self, document: bytes, **kwargs) -> bytes:
        """``signing.sign`` with this key (``email``, ``now``, ``passphrase`` pass through)."""
        return signing.sign(document, gnupghome=self.gnupghome, fingerprint=self.fingerprint, **kwargs)

    def detach_sign(self, payload: bytes, *, at: dt.datetime | None = None, extra: Sequence[str] = ()) -> str:
        """An armored detached signature over ``payload`` made by the gpg command line, as a creator's own
        tools would make it (no notation), optionally with gpg's clock at ``at``."""
        process = subprocess.run(
            [*gpg_argv(self.gnupghome, at=at), *extra, "--local-user", self.fingerprint, "--armor", "--detach-sign"],
            input=payload,
            capture_output=True,
            check=True,
        )
        return process.stdout.decode("ascii")

    def sign_endorsed(
        self,
        document: bytes,
        *,
        email: str | None = None,
        issuer: str | None = None,
        created: dt.datetime | None = None,
        at: dt.datetime | None = None,
        extra: Sequence[str] = (),
    ) -> bytes:
        """Fill the endorsement exactly as given (even wrongly) and sign with the gpg command line: the
        documents a careless or hostile signer makes, which ``signing.sign`` itself would refuse to make."""
        created = created or at or dt.datetime.now(dt.UTC).replace(microsecond=0)
        endorsed = metadata.endorse(
            document,
            email=email or self.email,
            subject=self.uid,
            issuer=issuer or f"OpenPGP:{self.fingerprint}",
            created=created,
        )
        armored = self.detach_sign(metadata.signed_bytes(endorsed), at=at, extra=extra)
        return metadata.attach_signature(endorsed, armored)


def generate_key(
    home: Path, uid: str, *, extra_uids: Sequence[str] = (), born: dt.datetime = KEY_BIRTH, expire: str = "never"
) -> PgpKey:
    """A new ed25519 signing key (no passphrase) in ``home``, born at ``born``."""
    base = gpg_argv(home, at=born)
    subprocess.run([*base, "--quick-gen-key", uid, "ed25519", "sign", expire], check=True, capture_output=True)
    listing = subprocess.run([*base, "--with-colons", "--list-keys", f"={uid}"], check=True, capture_output=True)
    fingerprint = next(
        line.split(":")[9] for line in listing.stdout.decode().splitlines() if line.startswith("fpr:")
    ).upper()
    for other in extra_uids:
        subprocess.run([*base, "--quick-add-uid", fingerprint, other], check=True, capture_output=True)
    if extra_uids:  # the newest user ID would otherwise become the primary one (needs a newer self-signature)
        later = gpg_argv(home, at=born + dt.timedelta(seconds=1))
        subprocess.run([*later, "--quick-set-primary-uid", fingerprint, uid], check=True, capture_output=True)
    armored = subprocess.run([*base, "--armor", "--export", fingerprint], check=True, capture_output=True)
    email = uid.split("<")[1].rstrip(">").lower()
    return PgpKey(home, fingerprint, uid, email, armored.stdout.decode("ascii"))


@dataclass(frozen=True)
class PgpKeys:
    creator: PgpKey
    endorser: PgpKey
    untrusted: PgpKey
    # Valid from 2020-01-01 for one year (gpg: until 2020-12-31) - expired today.
    expiring: PgpKey
    # Two public keys in one armored block, and one key's secret half, for key_inspect's refusals.
    two_keys_armored: str
    secret_armored: str


@pytest.fixture(scope="session")
def pgp_keys(tmp_path_factory) -> Iterator[PgpKeys]:
    """The session's keys, generated once (ed25519, ~20 ms each) in one private keyring."""
    home = tmp_path_factory.mktemp("pgp")
    home.chmod(0o700)
    creator = generate_key(home, CREATOR_UID, extra_uids=[CREATOR_SECOND_UID])
    endorser = generate_key(home, ENDORSER_UID)
    untrusted = generate_key(home, UNTRUSTED_UID)
    expiring = generate_key(home, EXPIRING_UID, expire="1y")
    two = subprocess.run(
        [*gpg_argv(home), "--armor", "--export", creator.fingerprint, endorser.fingerprint],
        check=True,
        capture_output=True,
    )
    secret = subprocess.run(
        [*gpg_argv(home), "--armor", "--export-secret-keys", untrusted.fingerprint], check=True, capture_output=True
    )
    yield PgpKeys(creator, endorser, untrusted, expiring, two.stdout.decode(), secret.stdout.decode())
    signing.shutdown_agent(home)


@pytest.fixture
def creator_key(pgp_keys: PgpKeys) -> PgpKey:
    """The image creator's key, trusted in this test's keyring."""
    signing.key_trust(pgp_keys.creator.armored)
    return pgp_keys.creator


@pytest.fixture
def endorser_key(pgp_keys: PgpKeys) -> PgpKey:
    """A second endorser's key (a site security officer), trusted in this test's keyring."""
    signing.key_trust(pgp_keys.endorser.armored)
    return pgp_keys.endorser


@pytest.fixture
def untrusted_key(pgp_keys: PgpKeys) -> PgpKey:
    """A key the Marketplace does not know."""
    return pgp_keys.untrusted


def random_checksums() -> dict[str, str]:
    """Checksums of a new, random image."""
    content = os.urandom(32)
    return {"SHA-1": hashlib.sha1(content).hexdigest(), "SHA-256": hashlib.sha256(content).hexdigest()}  # noqa: S324


def entry_document(*, sha1: str | None = None, **fields) -> bytes:
    """An unsigned entry with plausible defaults; any :func:`metadata.build` field may be overridden."""
    checksums = fields.pop("checksums", None) or random_checksums()
    if sha1 is not None:
        checksums = {**checksums, "SHA-1": sha1}
    defaults = {
        "image_bytes": 2 * 1024**3,
        "type": "base",
        "title": "Ubuntu 24.04 LTS base",
        "description": "Minimal server image with cloud-init.",
        "creator": "Casey Creator",
        "os": "Ubuntu",
        "os_version": "24.04",
        "os_arch": "x86_64",
        "kind": "machine",
        "format": "qcow2",
        "compression": "gz",
        "locations": ("https://images.example.org/ubuntu-24.04.qcow2.gz",),
        "hypervisor": "kvm",
        "disks_bus": "virtio",
    }
    return metadata.build(checksums=checksums, **{**defaults, **fields})


@pytest.fixture
def signed_entry(creator_key: PgpKey) -> Callable[..., bytes]:
    """``signed_entry(key=creator_key, email=None, now=None, sha1=None, **fields)``: signed entry bytes."""

    def make(*, key: PgpKey | None = None, email: str | None = None, now: dt.datetime | None = None, **fields):
        return (key or creator_key).sign(entry_document(**fields), email=email, now=now)

    return make
