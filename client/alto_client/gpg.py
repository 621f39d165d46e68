"""Signing entries with the creator's own OpenPGP key through gpg (python-gnupg): the endorsement is filled from
the key and the detached armored signature is enveloped as DESIGN.md §2.2 says, by the shared format's rules."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parseaddr

import alto_metadata as md
import gnupg

from alto_client.api import AltoError, UsageProblem

_ARMOR_RE = re.compile(r"-----BEGIN PGP SIGNATURE-----\r?\n.*\r?\n-----END PGP SIGNATURE-----", re.DOTALL)


class SigningFailed(AltoError):
    """gpg could not sign (no such key, wrong passphrase, no agent)."""


def _gpg(gnupghome: str | None) -> gnupg.GPG:
    try:
        return gnupg.GPG(gnupghome=gnupghome, options=["--no-auto-key-retrieve"], encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise SigningFailed(f"gpg could not run: {exc}") from None


def uid_email(uid: str) -> str:
    return parseaddr(uid)[1].lower() if "@" in uid else ""


def secret_key(gnupghome: str | None, wanted: str | None) -> dict:
    """The secret key ``wanted`` (fingerprint, key id or e-mail), or the only one in the keyring."""
    keys = _gpg(gnupghome).list_keys(secret=True)
    if wanted:
        needle = wanted.replace(" ", "").upper()
        for key in keys:
            if key["fingerprint"].upper().endswith(needle) or any(
                uid_email(uid) == wanted.lower() for uid in key["uids"]
            ):
                return key
        raise UsageProblem(f"no secret key {wanted!r} in the gpg keyring")
    if len(keys) != 1:
        listed = "; ".join(f"{k['fingerprint']} {k['uids'][0] if k['uids'] else ''}" for k in keys) or "none"
        raise UsageProblem(f"choose the signing key with --key (secret keys found: {listed})")
    return keys[0]


def public_key_armored(gnupghome: str | None, fingerprint: str) -> str:
    armored = _gpg(gnupghome).export_keys(fingerprint)
    if not armored:
        raise UsageProblem(f"gpg has no public key {fingerprint}")
    return str(armored)


def sign(
    document: bytes,
    *,
    gnupghome: str | None,
    key: str | None,
    email: str | None = None,
    passphrase: str | None = None,
    now: datetime | None = None,
    file_location_dirs: tuple[str, ...] = (),
) -> bytes:
    """The document endorsed by the key's user ID (with ``email``, else the first with an e-mail) and signed."""
    chosen = secret_key(gnupghome, key)
    fingerprint = chosen["fingerprint"].upper()
    uids = [uid for uid in chosen["uids"] if uid_email(uid)]
    uid = next((u for u in uids if uid_email(u) == email.lower()), None) if email else (uids[0] if uids else None)
    if uid is None:
        having = ", ".join(uid_email(u) for u in uids) or "none"
        raise UsageProblem(f"the key {fingerprint} has no user ID with {email or 'an e-mail'} (it has {having})")
    created = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    endorsed = md.endorse(document, email=uid_email(uid), subject=uid, issuer=f"OpenPGP:{fingerprint}", created=created)
    entry = md.parse(
        endorsed, file_location_dirs=file_location_dirs
    )  # refuses to sign an invalid entry, with every rule it breaks
    payload = md.signed_bytes(endorsed)
    extra = [
        "--digest-algo",
        "SHA256",
        "--sig-notation",
        f"{md.NOTATION}={md.notation_value(entry.identifier, entry.endorsement.email, created)}",
    ]
    result = _gpg(gnupghome).sign(
        payload, keyid=fingerprint, passphrase=passphrase, detach=True, clearsign=False, extra_args=extra
    )
    armored = str(result)
    if not _ARMOR_RE.search(armored):
        why = (result.stderr or "").strip().splitlines()[-1:] or ["no signature"]
        raise SigningFailed(f"gpg could not sign with {fingerprint}: {why[0]}")
    return md.attach_signature(endorsed, armored)
