"""OpenPGP keys: inspecting a public key, trusting it, looking it up; the site's own secret key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from pathlib import Path

from marketplace.signing.gpg import (
    ARMOR_RE,
    Gpg,
    SigningRefused,
    gpg_for,
    private_dir,
    scratch_home,
    shutdown_agent,
    trusted_home,
)

MAX_KEY_CHARS = 1024 * 1024


@dataclass(frozen=True)
class KeyInfo:
    fingerprint: str  # 40 upper-case hex digits of the primary key
    uids: tuple[str, ...]
    emails: tuple[str, ...]  # lower-case, from the user IDs
    created: datetime
    expires: datetime | None
    armored: str  # the public key as gpg exports it

    def uid_for(self, email: str) -> str | None:
        """The first user ID whose e-mail is ``email`` (case-insensitive)."""
        email = email.lower()
        return next((uid for uid in self.uids if uid_email(uid) == email), None)


def uid_email(uid: str) -> str:
    """The lower-case e-mail of an OpenPGP user ID (``Name <address>``), or "" when it has none."""
    _, address = parseaddr(uid)
    return address.lower() if "@" in address else ""


def timestamp(value: str | None) -> datetime | None:
    """A time as gpg prints it (seconds since the epoch, or ISO basic), in UTC."""
    if not value:
        return None
    if value.isdigit():
        return datetime.fromtimestamp(int(value), tz=UTC)
    return datetime.strptime(value, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)


def key_info(gpg: Gpg, fingerprint: str, *, secret: bool = False) -> KeyInfo | None:
    """What the keyring of ``gpg`` holds as ``fingerprint``, or None (``secret``: among its secret keys)."""
    keys = gpg.list_keys(secret=secret, keys=[fingerprint])
    key = next((k for k in keys if k["fingerprint"].upper() == fingerprint.upper()), None)
    if key is None:
        return None
    uids = tuple(key["uids"])
    created = timestamp(key["date"])
    if created is None:
        raise SigningRefused(f"gpg lists no creation date for the key {fingerprint}.", code="pgp-key-invalid")
    armored = "" if secret else gpg.export_keys(key["fingerprint"], armor=True)
    return KeyInfo(
        fingerprint=key["fingerprint"].upper(),
        uids=uids,
        emails=tuple(dict.fromkeys(e for e in map(uid_email, uids) if e)),
        created=created,
        expires=timestamp(key["expires"]),
        armored=armored,
    )


def key_inspect(armored: str) -> KeyInfo:
    """What an armored OpenPGP public key is, read in a throw-away keyring (the trusted one is not touched).

    Refuses anything but exactly one public key with user IDs that can sign."""
    if not isinstance(armored, str) or not armored.strip() or len(armored) > MAX_KEY_CHARS:
        raise SigningRefused("That is not an OpenPGP public key.", code="pgp-key-invalid")
    if "PRIVATE KEY BLOCK" in armored:
        raise SigningRefused(
            "That is a secret (private) key. Paste only the public key: gpg --armor --export <fingerprint>.",
            code="pgp-key-secret",
        )
    with scratch_home() as home:
        gpg = gpg_for(home)
        # A dry run first: it lists secret packets too, without importing them (which would start an agent).
        scanned = gpg.scan_keys_mem(armored)
        if any(key.get("type") == "sec" for key in scanned):
            raise SigningRefused(
                "That key block holds secret key material. Paste only the public key.", code="pgp-key-secret"
            )
        result = gpg.import_keys(armored)
        fingerprints = sorted({f.upper() for f in result.fingerprints})
        if result.sec_read:
            shutdown_agent(home)  # importing secret material started one for the scratch keyring
            raise SigningRefused("That key block holds secret key material.", code="pgp-key-secret")
        if len(fingerprints) > 1:
            raise SigningRefused(
                f"That text holds {len(fingerprints)} keys; register one key at a time.", code="pgp-key-count"
            )
        if not fingerprints:
            raise SigningRefused("No OpenPGP public key could be read from that text.", code="pgp-key-invalid")
        listed = gpg.list_keys(keys=fingerprints)
        info = key_info(gpg, fingerprints[0])
    if info is None or not listed:
        raise SigningRefused("No OpenPGP public key could be read from that text.", code="pgp-key-invalid")
    key = listed[0]
    if key.get("trust") == "r":
        raise SigningRefused(f"The key {info.fingerprint} has been revoked by its owner.", code="pgp-key-revoked")
    # Lower case: the primary key can sign; upper case: the key as a whole can now (not when expired).
    if "s" not in (key.get("cap") or "").lower():
        raise SigningRefused(f"The key {info.fingerprint} cannot make signatures.", code="pgp-key-cannot-sign")
    if not info.uids:
        raise SigningRefused(f"The key {info.fingerprint} has no user ID.", code="pgp-key-invalid")
    return info


def key_trust(armored: str) -> KeyInfo:
    """Import a public key into the trusted keyring (idempotent; a newer copy adds its user IDs/expiry)."""
    info = key_inspect(armored)
    gpg = gpg_for(trusted_home())
    result = gpg.import_keys(info.armored)
    if info.fingerprint not in {f.upper() for f in result.fingerprints}:
        raise SigningRefused(f"gpg did not import the key {info.fingerprint}: {result.stderr}", code="pgp-key-invalid")
    trusted = key_info(gpg, info.fingerprint)
    if trusted is None:
        raise SigningRefused(
            f"The key {info.fingerprint} is not in the trusted keyring after import.", code="pgp-key-invalid"
        )
    return trusted


def key_lookup(fingerprint: str) -> KeyInfo | None:
    """The trusted keyring's view of a key, or None when it is not there."""
    if not re.fullmatch(r"[0-9A-Fa-f]{40}", fingerprint or ""):
        return None
    return key_info(gpg_for(trusted_home()), fingerprint)


# ---------------------------------------------------------------------------------------------------------------
# The site's own key: a secret key kept in its own keyring, protected by a passphrase


# The agent must not remember the passphrase: with it cached, anyone who can reach the keyring could sign as
# the site without the passphrase file. Loopback lets python-gnupg hand the passphrase over without a pinentry.
_SITE_AGENT_CONF = "default-cache-ttl 0\nmax-cache-ttl 0\nallow-loopback-pinentry\n"


def site_keyring(gnupghome: Path) -> Path:
    """The site keyring's GNUPGHOME, created (mode 700) with an agent that caches no passphrase."""
    home = private_dir(Path(gnupghome))
    conf = home / "gpg-agent.conf"
    if not conf.exists() or conf.read_text() != _SITE_AGENT_CONF:
        conf.write_text(_SITE_AGENT_CONF)
        shutdown_agent(home)  # a running agent reads its configuration only when it starts
    return home


def secret_key_find(*, gnupghome: Path, email: str) -> KeyInfo | None:
    """The newest secret key in ``gnupghome`` with a user ID for ``email``, with its armored public half."""
    gpg = gpg_for(Path(gnupghome))
    email = email.lower()
    found: list[KeyInfo] = []
    for key in gpg.list_keys(secret=True):
        info = key_info(gpg, key["fingerprint"])
        if info is not None and email in info.emails:
            found.append(info)
    return max(found, key=lambda info: info.created, default=None)


def key_generate(*, gnupghome: Path, name: str, email: str, passphrase: str) -> KeyInfo:
    """A new ed25519 signing key ``name <email>`` in ``gnupghome``, its secret half protected by ``passphrase``.

    Returns the key with its armored public half (what other sites import to trust it)."""
    if not passphrase:
        raise SigningRefused("The site key needs a passphrase.", code="pgp-passphrase")
    gpg = gpg_for(Path(gnupghome))
    request = gpg.gen_key_input(
        key_type="EDDSA",
        key_curve="ed25519",
        key_usage="sign",
        name_real=name,
        name_email=email,
        passphrase=passphrase,
        expire_date=0,
    )
    result = gpg.gen_key(request)
    fingerprint = str(result.fingerprint or "").upper()
    info = key_info(gpg, fingerprint) if fingerprint else None
    if info is None:
        # gpg's own complaints ("gpg: …", e.g. an agent that did not come up) say why; the status line says only that.
        lines = (result.stderr or "").strip().splitlines()
        problem = [line for line in lines if line.startswith("gpg:")] or lines[-1:] or ["no key"]
        raise SigningRefused(f"gpg could not generate a key: {'; '.join(problem)}", code="pgp-keygen-failed")
    return info


def key_unlocks(*, gnupghome: Path, fingerprint: str, passphrase: str) -> bool:
    """Whether ``passphrase`` unlocks the secret key ``fingerprint`` (by signing a few throw-away bytes)."""
    if not passphrase or "\n" in passphrase or "\r" in passphrase:  # gpg reads the passphrase up to a newline
        return False
    result = gpg_for(Path(gnupghome)).sign(
        b"altostratus passphrase check", keyid=fingerprint, passphrase=passphrase, detach=True, clearsign=False
    )
    return bool(ARMOR_RE.search(str(result)))
