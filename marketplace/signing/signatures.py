"""Signing an entry with a secret key: the endorsement filled from the key, the enveloped signature appended."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from marketplace import metadata as md

# The notation binding a signature to its entry key is the shared format's, so the ``alto`` client's carry it too.
from marketplace.metadata import NOTATION, notation_value
from marketplace.signing.gpg import ARMOR_RE, SigningRefused, gpg_for
from marketplace.signing.keys import key_info, uid_email

_GPG_ERR_BAD_PASSPHRASE = 11  # libgpg-error's GPG_ERR_BAD_PASSPHRASE, in the low 16 bits of a status code


def sign(
    document: bytes,
    *,
    gnupghome: Path,
    fingerprint: str,
    passphrase: str | None = None,
    email: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """Sign an unsigned entry with the secret key ``fingerprint`` held in ``gnupghome``.

    Fills the endorsement from the key (e-mail, user ID, ``OpenPGP:<fingerprint>``, created = ``now``), checks
    the result is a valid entry, and appends the enveloped ``<sig:Signature>`` (DESIGN.md §2.2)."""
    gpg = gpg_for(Path(gnupghome))
    key = key_info(gpg, fingerprint, secret=True)
    if key is None:
        raise SigningRefused(f"No secret key {fingerprint} in {gnupghome}.", code="pgp-key-missing")
    if email is None:
        uid = next((u for u in key.uids if uid_email(u)), None)
        if uid is None:
            raise SigningRefused(f"The key {key.fingerprint} has no user ID with an e-mail.", code="email-not-on-key")
    else:
        uid = key.uid_for(email)
        if uid is None:
            raise SigningRefused(
                f"{email} is not an e-mail of the key {key.fingerprint} (it has {', '.join(key.emails) or 'none'}).",
                code="email-not-on-key",
            )
    created = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    endorsed = md.endorse(
        document, email=uid_email(uid), subject=uid, issuer=f"OpenPGP:{key.fingerprint}", created=created
    )
    entry = md.parse(endorsed)  # refuses to sign an invalid entry
    payload = md.signed_bytes(endorsed)
    result = gpg.sign(
        payload,
        keyid=key.fingerprint,
        passphrase=passphrase,
        detach=True,
        clearsign=False,
        extra_args=[
            "--digest-algo",
            "SHA256",
            "--sig-notation",
            f"{NOTATION}={notation_value(entry.identifier, entry.endorsement.email, created)}",
        ],
    )
    armored = str(result)
    if not ARMOR_RE.search(armored):
        failures = re.findall(r"^\[GNUPG:\] (?:FAILURE|ERROR) \S+ (\d+)", result.stderr or "", re.MULTILINE)
        if any(int(code) & 0xFFFF == _GPG_ERR_BAD_PASSPHRASE for code in failures):
            raise SigningRefused(f"Wrong passphrase for the key {key.fingerprint}.", code="pgp-passphrase")
        problem = (result.stderr or "").strip().splitlines()[-1:] or ["no signature"]
        raise SigningRefused(f"gpg could not sign with {key.fingerprint}: {problem[0]}", code="pgp-sign-failed")
    signed = md.attach_signature(endorsed, armored)
    if md.signed_bytes(signed) != payload:  # the guarantee of DESIGN.md §2.2; cheap to hold ourselves to it
        raise RuntimeError("attaching the signature changed the signed bytes")
    return signed
