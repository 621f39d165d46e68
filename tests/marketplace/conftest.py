"""Fixtures for the Marketplace tests: real gpg keys made once per session, a fresh trusted keyring per
test, and helpers that build and sign entries the way a creator's tools do."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from knox.models import AuthToken

from marketplace import metadata
from tests.factories import StaffFactory, UserFactory
from tests.marketplace.keys import (  # noqa: F401 - fixtures shared by every marketplace test module
    PgpKey,
    PgpKeys,
    creator_key,
    endorser_key,
    pgp_keys,
    signed_entry,
    untrusted_key,
)

CREATOR_EMAIL = "creator@example.org"
ENDORSER_EMAIL = "security@example.org"
UNTRUSTED_EMAIL = "mallory@example.org"

T0 = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC)  # the keys are born in 2020: entries may be dated from then


# The cast of tests/conftest.py, with the e-mails of the session's keys (tests/marketplace/keys.py).
@pytest.fixture
def owner(db):
    return UserFactory(username="owner", email=CREATOR_EMAIL)


@pytest.fixture
def staff(db):
    return StaffFactory(username="staff", email=ENDORSER_EMAIL)


@pytest.fixture
def outsider(db):
    return UserFactory(username="outsider", email=UNTRUSTED_EMAIL)


@pytest.fixture(scope="session")
def keyring(pgp_keys: PgpKeys) -> dict[str, PgpKey]:  # noqa: F811 - the fixture imported above
    """Each user's key by role: the owner creates images, staff is the site's security officer, and the
    outsider's key is never registered."""
    return {"owner": pgp_keys.creator, "staff": pgp_keys.endorser, "outsider": pgp_keys.untrusted}


@pytest.fixture(autouse=True)
def trusted_keyring(settings, tmp_path) -> Iterator[Path]:
    """Each test trusts only the keys it registers (and stops the gpg-agent that importing them started)."""
    from marketplace import signing

    home = tmp_path / "trusted-gnupg"
    settings.MARKETPLACE_GNUPG_HOME = home
    yield home
    if any(home.glob("S.gpg-agent*")):
        signing.shutdown_agent(home)


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


# What the test entries say about the image unless a test says otherwise.
UBUNTU = {
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


def unsigned_entry(image: Image = IMAGE, **fields) -> bytes:
    return metadata.build(image_bytes=len(image.content), checksums=image.checksums, **{**UBUNTU, **fields})


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
            _signed_cache[cache_key] = keyring[name].sign(unsigned_entry(image, **fields), now=at)
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


# --- The site key ---------------------------------------------------------------------------------------

SITE_EMAIL = "site@altostratus.test"
SITE_PASSPHRASE = "the site's own passphrase"


@pytest.fixture(scope="session")
def site_keyring_home(tmp_path_factory):
    """A site keyring holding the site's secret key (passphrase-protected), generated once per session
    by the code ``create_site_key`` runs."""
    from marketplace import signing

    home = signing.site_keyring(tmp_path_factory.mktemp("site-gnupg"))
    signing.key_generate(gnupghome=home, name="Test Site", email=SITE_EMAIL, passphrase=SITE_PASSPHRASE)
    yield home
    signing.shutdown_agent(home)


@pytest.fixture
def site_settings(settings, tmp_path, site_keyring_home):
    """Settings pointing at the session's site keyring and a passphrase file that unlocks it."""
    passphrase_file = tmp_path / "site-key.passphrase"
    passphrase_file.write_text(SITE_PASSPHRASE + "\n")
    passphrase_file.chmod(0o600)
    settings.MARKETPLACE_SITE_GNUPG_HOME = site_keyring_home
    settings.MARKETPLACE_SITE_KEY_PASSPHRASE_FILE = passphrase_file
    settings.MARKETPLACE_SITE_KEY_EMAIL = SITE_EMAIL
    return settings


@pytest.fixture
def site_key(db, site_settings):
    """The site key as ``create_site_key`` leaves it: recorded, and trusted in this test's keyring."""
    from marketplace import services

    key, _created = services.site_key_ensure(actor=None)
    return key
