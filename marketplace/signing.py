"""OpenPGP signatures of Marketplace entries (DESIGN.md §2.2): the only module that talks to gpg.

Keys are inspected in a throw-away keyring, trusted by importing them into the trusted keyring
(``settings.MARKETPLACE_GNUPG_HOME``), and entries are verified against that keyring only: nothing in an
uploaded document is ever imported. Verifiers are looked up by signature element, so that other
signature kinds (legacy XML-DSig) can be added beside OpenPGP.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from pathlib import Path

import gnupg
from django.conf import settings
from lxml import etree

from core.errors import ApplicationError
from marketplace import metadata as md

# Never reach out for keys, never take one from a signature packet (gpg >= 2.2.26 can embed the signer's key),
# and never consult gpg's web of trust: the Marketplace decides whom it trusts.
_SAFE_OPTIONS = [
    "--no-auto-key-retrieve",
    "--no-auto-key-import",
    "--auto-key-locate",
    "local",
    "--no-greeting",
    "--trust-model",
    "always",
]
# Binds a signature to the entry key (identifier, e-mail, created), so that a signature copied onto another
# entry is recognised as such rather than reported as a bare "bad signature".
NOTATION = "entry@altostratus.dev"
MAX_KEY_CHARS = 1024 * 1024
_GPG_ERR_BAD_PASSPHRASE = 11  # libgpg-error's GPG_ERR_BAD_PASSPHRASE, in the low 16 bits of a status code
_ARMOR_RE = re.compile(r"-----BEGIN PGP SIGNATURE-----\r?\n.*\r?\n-----END PGP SIGNATURE-----", re.DOTALL)
_STATUS_RE = re.compile(r"^\[GNUPG:\] (\S+) ?(.*)$", re.MULTILINE)
# python-gnupg logs every non-zero gpg exit as a warning; a refused signature is an answer, not an incident.
logging.getLogger("gnupg").setLevel(logging.ERROR)


class SigningError(ApplicationError):
    """A key or signature was refused; ``code`` names the check (``pgp-key-invalid``, ``email-not-on-key``…)."""

    status = 400
    default_code = "signing-error"


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


@dataclass(frozen=True)
class SignatureCheck:
    kind: str  # "none" | "openpgp" | "xmldsig"
    verified: bool
    fingerprint: str | None  # of the key that made a good signature
    check: str | None  # the failed check's name, None when verified
    message: str  # the failed check, or who signed it

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "verified": self.verified,
            "fingerprint": self.fingerprint,
            "check": self.check,
            "message": self.message,
        }


# ---------------------------------------------------------------------------------------------------------------
# Keyrings


def trusted_home() -> Path:
    """The trusted keyring's GNUPGHOME, created (mode 700) on first use."""
    return _private_dir(Path(settings.MARKETPLACE_GNUPG_HOME))


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def _gpg(home: Path) -> gnupg.GPG:
    return gnupg.GPG(gnupghome=str(home), options=list(_SAFE_OPTIONS), encoding="utf-8")


@contextmanager
def _scratch_home() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="alto-gpg-") as tmp:
        home = Path(tmp)
        home.chmod(0o700)
        try:
            yield home
        finally:
            # gpg starts an agent for a keyring it imports into; without this it outlives the deleted directory.
            if any(home.glob("S.gpg-agent*")):
                shutdown_agent(home)


def uid_email(uid: str) -> str:
    """The lower-case e-mail of an OpenPGP user ID (``Name <address>``), or "" when it has none."""
    _, address = parseaddr(uid)
    return address.lower() if "@" in address else ""


def _timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    if value.isdigit():
        return datetime.fromtimestamp(int(value), tz=UTC)
    return datetime.strptime(value, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)


def _key_info(gpg: gnupg.GPG, fingerprint: str, *, secret: bool = False) -> KeyInfo | None:
    keys = gpg.list_keys(secret=secret, keys=[fingerprint])
    key = next((k for k in keys if k["fingerprint"].upper() == fingerprint.upper()), None)
    if key is None:
        return None
    uids = tuple(key["uids"])
    created = _timestamp(key["date"])
    if created is None:
        raise SigningError(f"gpg lists no creation date for the key {fingerprint}.", code="pgp-key-invalid")
    armored = "" if secret else gpg.export_keys(key["fingerprint"], armor=True)
    return KeyInfo(
        fingerprint=key["fingerprint"].upper(),
        uids=uids,
        emails=tuple(dict.fromkeys(e for e in map(uid_email, uids) if e)),
        created=created,
        expires=_timestamp(key["expires"]),
        armored=armored,
    )


def key_inspect(armored: str) -> KeyInfo:
    """What an armored OpenPGP public key is, read in a throw-away keyring (the trusted one is not touched).

    Refuses anything but exactly one public key with user IDs that can sign."""
    if not isinstance(armored, str) or not armored.strip() or len(armored) > MAX_KEY_CHARS:
        raise SigningError("That is not an OpenPGP public key.", code="pgp-key-invalid")
    if "PRIVATE KEY BLOCK" in armored:
        raise SigningError(
            "That is a secret (private) key. Paste only the public key: gpg --armor --export <fingerprint>.",
            code="pgp-key-secret",
        )
    with _scratch_home() as home:
        gpg = _gpg(home)
        # A dry run first: it lists secret packets too, without importing them (which would start an agent).
        scanned = gpg.scan_keys_mem(armored)
        if any(key.get("type") == "sec" for key in scanned):
            raise SigningError(
                "That key block holds secret key material. Paste only the public key.", code="pgp-key-secret"
            )
        result = gpg.import_keys(armored)
        fingerprints = sorted({f.upper() for f in result.fingerprints})
        if result.sec_read:
            shutdown_agent(home)  # importing secret material started one for the scratch keyring
            raise SigningError("That key block holds secret key material.", code="pgp-key-secret")
        if len(fingerprints) > 1:
            raise SigningError(
                f"That text holds {len(fingerprints)} keys; register one key at a time.", code="pgp-key-count"
            )
        if not fingerprints:
            raise SigningError("No OpenPGP public key could be read from that text.", code="pgp-key-invalid")
        listed = gpg.list_keys(keys=fingerprints)
        info = _key_info(gpg, fingerprints[0])
    if info is None or not listed:
        raise SigningError("No OpenPGP public key could be read from that text.", code="pgp-key-invalid")
    key = listed[0]
    if key.get("trust") == "r":
        raise SigningError(f"The key {info.fingerprint} has been revoked by its owner.", code="pgp-key-revoked")
    # Lower case: the primary key can sign; upper case: the key as a whole can now (not when expired).
    if "s" not in (key.get("cap") or "").lower():
        raise SigningError(f"The key {info.fingerprint} cannot make signatures.", code="pgp-key-cannot-sign")
    if not info.uids:
        raise SigningError(f"The key {info.fingerprint} has no user ID.", code="pgp-key-invalid")
    return info


def key_trust(armored: str) -> KeyInfo:
    """Import a public key into the trusted keyring (idempotent; a newer copy adds its user IDs/expiry)."""
    info = key_inspect(armored)
    gpg = _gpg(trusted_home())
    result = gpg.import_keys(info.armored)
    if info.fingerprint not in {f.upper() for f in result.fingerprints}:
        raise SigningError(f"gpg did not import the key {info.fingerprint}: {result.stderr}", code="pgp-key-invalid")
    trusted = _key_info(gpg, info.fingerprint)
    if trusted is None:
        raise SigningError(
            f"The key {info.fingerprint} is not in the trusted keyring after import.", code="pgp-key-invalid"
        )
    return trusted


def key_lookup(fingerprint: str) -> KeyInfo | None:
    """The trusted keyring's view of a key, or None when it is not there."""
    if not re.fullmatch(r"[0-9A-Fa-f]{40}", fingerprint or ""):
        return None
    return _key_info(_gpg(trusted_home()), fingerprint)


# ---------------------------------------------------------------------------------------------------------------
# The site's own key: a secret key kept in its own keyring, protected by a passphrase


# The agent must not remember the passphrase: with it cached, anyone who can reach the keyring could sign as
# the site without the passphrase file. Loopback lets python-gnupg hand the passphrase over without a pinentry.
_SITE_AGENT_CONF = "default-cache-ttl 0\nmax-cache-ttl 0\nallow-loopback-pinentry\n"


def site_keyring(gnupghome: Path) -> Path:
    """The site keyring's GNUPGHOME, created (mode 700) with an agent that caches no passphrase."""
    home = _private_dir(Path(gnupghome))
    conf = home / "gpg-agent.conf"
    if not conf.exists() or conf.read_text() != _SITE_AGENT_CONF:
        conf.write_text(_SITE_AGENT_CONF)
        shutdown_agent(home)  # a running agent reads its configuration only when it starts
    return home


def secret_key_find(*, gnupghome: Path, email: str) -> KeyInfo | None:
    """The newest secret key in ``gnupghome`` with a user ID for ``email``, with its armored public half."""
    gpg = _gpg(Path(gnupghome))
    email = email.lower()
    found: list[KeyInfo] = []
    for key in gpg.list_keys(secret=True):
        info = _key_info(gpg, key["fingerprint"])
        if info is not None and email in info.emails:
            found.append(info)
    return max(found, key=lambda info: info.created, default=None)


def key_generate(*, gnupghome: Path, name: str, email: str, passphrase: str) -> KeyInfo:
    """A new ed25519 signing key ``name <email>`` in ``gnupghome``, its secret half protected by ``passphrase``.

    Returns the key with its armored public half (what other sites import to trust it)."""
    if not passphrase:
        raise SigningError("The site key needs a passphrase.", code="pgp-passphrase")
    gpg = _gpg(Path(gnupghome))
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
    info = _key_info(gpg, fingerprint) if fingerprint else None
    if info is None:
        problem = (result.stderr or "").strip().splitlines()[-1:] or ["no key"]
        raise SigningError(f"gpg could not generate a key: {problem[0]}", code="pgp-keygen-failed")
    return info


def key_unlocks(*, gnupghome: Path, fingerprint: str, passphrase: str) -> bool:
    """Whether ``passphrase`` unlocks the secret key ``fingerprint`` (by signing a few throw-away bytes)."""
    if not passphrase or "\n" in passphrase or "\r" in passphrase:  # gpg reads the passphrase up to a newline
        return False
    result = _gpg(Path(gnupghome)).sign(
        b"altostratus passphrase check", keyid=fingerprint, passphrase=passphrase, detach=True, clearsign=False
    )
    return bool(_ARMOR_RE.search(str(result)))


# ---------------------------------------------------------------------------------------------------------------
# Signing


def _notation_value(identifier: str, email: str, created: datetime) -> str:
    return f"{identifier}/{email.lower()}/{md.format_date(created)}"


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
    gpg = _gpg(Path(gnupghome))
    key = _key_info(gpg, fingerprint, secret=True)
    if key is None:
        raise SigningError(f"No secret key {fingerprint} in {gnupghome}.", code="pgp-key-missing")
    if email is None:
        uid = next((u for u in key.uids if uid_email(u)), None)
        if uid is None:
            raise SigningError(f"The key {key.fingerprint} has no user ID with an e-mail.", code="email-not-on-key")
    else:
        uid = key.uid_for(email)
        if uid is None:
            raise SigningError(
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
            f"{NOTATION}={_notation_value(entry.identifier, entry.endorsement.email, created)}",
        ],
    )
    armored = str(result)
    if not _ARMOR_RE.search(armored):
        failures = re.findall(r"^\[GNUPG:\] (?:FAILURE|ERROR) \S+ (\d+)", result.stderr or "", re.MULTILINE)
        if any(int(code) & 0xFFFF == _GPG_ERR_BAD_PASSPHRASE for code in failures):
            raise SigningError(f"Wrong passphrase for the key {key.fingerprint}.", code="pgp-passphrase")
        problem = (result.stderr or "").strip().splitlines()[-1:] or ["no signature"]
        raise SigningError(f"gpg could not sign with {key.fingerprint}: {problem[0]}", code="pgp-sign-failed")
    signed = md.attach_signature(endorsed, armored)
    if md.signed_bytes(signed) != payload:  # the guarantee of DESIGN.md §2.2; cheap to hold ourselves to it
        raise RuntimeError("attaching the signature changed the signed bytes")
    return signed


# ---------------------------------------------------------------------------------------------------------------
# Verification


@dataclass(frozen=True)
class _GpgVerdict:
    statuses: dict[str, list[str]]
    ordered: tuple[tuple[str, str], ...]

    def has(self, key: str) -> bool:
        return key in self.statuses

    def first(self, key: str) -> list[str]:
        values = self.statuses.get(key) or [""]
        return values[0].split()


def _run_verify(armored: str, payload: bytes) -> _GpgVerdict:
    gpg = _gpg(trusted_home())
    with _scratch_home() as tmp:
        signature_path = tmp / "entry.sig"
        signature_path.write_text(armored, encoding="ascii")
        result = gpg.verify_data(str(signature_path), payload)
    ordered = tuple(_STATUS_RE.findall(result.stderr or ""))
    statuses: dict[str, list[str]] = {}
    for key, value in ordered:
        statuses.setdefault(key, []).append(value)
    return _GpgVerdict(statuses, ordered)


def _signature_notations(armored: str) -> dict[str, str]:
    """Notations of a signature read from its packets, without verifying it (used only after a failure)."""
    with _scratch_home() as home:
        process = subprocess.run(  # noqa: S603 - fixed argv, the signature goes in on stdin
            [_gpg_binary(), "--homedir", str(home), "--batch", "--no-tty", "--list-packets"],
            input=armored.encode("ascii", "replace"),
            capture_output=True,
            timeout=30,
            check=False,
        )
    notations = {}
    for line in process.stdout.decode("utf-8", "replace").splitlines():
        match = re.search(r"\(notation: ([^=]+)=(.*)\)\s*$", line)
        if match:
            notations[match.group(1)] = match.group(2)
    return notations


def _gpg_binary() -> str:
    return shutil.which("gpg") or "/usr/bin/gpg"


def _fail(kind: str, check: str, message: str, fingerprint: str | None = None) -> SignatureCheck:
    return SignatureCheck(kind=kind, verified=False, fingerprint=fingerprint, check=check, message=message)


# (signature element, signed bytes, the entry, now): the key and the signature must be usable at ``now``.
Verifier = Callable[[etree._Element, bytes, md.Metadata, datetime], SignatureCheck]
VERIFIERS: dict[str, Verifier] = {}


def register_verifier(tag: str) -> Callable[[Verifier], Verifier]:
    """Register the verifier for a signature element (Clark name)."""

    def register(function: Verifier) -> Verifier:
        VERIFIERS[tag] = function
        return function

    return register


@register_verifier(md.OPENPGP_SIGNATURE)
def _verify_openpgp(element: etree._Element, payload: bytes, entry: md.Metadata, now: datetime) -> SignatureCheck:
    kind = "openpgp"
    armored = (element.text or "").strip()
    if not armored.isascii() or not _ARMOR_RE.fullmatch(armored):
        return _fail(kind, "signature-malformed", "sig:Signature does not hold an ASCII-armored OpenPGP signature.")
    verdict = _run_verify(armored, payload)
    if len(verdict.statuses.get("NEWSIG", [])) > 1:
        return _fail(kind, "signature-malformed", "sig:Signature holds more than one OpenPGP signature.")
    endorsement = entry.endorsement
    expected = _notation_value(entry.identifier, endorsement.email, endorsement.created)
    if verdict.has("BADSIG"):
        made_for = _signature_notations(armored).get(NOTATION)
        if made_for is not None and made_for != expected:
            return _fail(
                kind,
                "signature-copied",
                f"The signature was made for another entry ({made_for}), not this one ({expected}).",
            )
        return _fail(
            kind, "bad-signature", "The signature does not match the document: it was changed after it was signed."
        )
    errsig = verdict.first("ERRSIG")
    if verdict.has("NO_PUBKEY") or (len(errsig) > 5 and errsig[5] == "9"):
        key_id = (errsig[6:7] or errsig[:1] or verdict.first("NO_PUBKEY"))[0]
        return _fail(kind, "unknown-key", f"The signing key {key_id} is not known to this Marketplace.")
    if not verdict.has("VALIDSIG"):
        return _fail(kind, "signature-malformed", "gpg could not read the signature (corrupt or not a signature).")
    valid = verdict.first("VALIDSIG")
    fingerprint = (valid[9] if len(valid) >= 10 else valid[0]).upper()
    signed_at = _timestamp(valid[2])
    notation = _good_notation(verdict)
    if notation is not None and notation != expected:
        return _fail(
            kind,
            "signature-copied",
            f"The signature was made for another entry ({notation}), not this one ({expected}).",
            fingerprint,
        )
    if verdict.has("REVKEYSIG"):
        return _fail(kind, "revoked-key", f"The key {fingerprint} has been revoked by its owner.", fingerprint)
    signature_expires = _timestamp(valid[3]) if len(valid) > 3 and valid[3] not in ("", "0") else None
    if verdict.has("EXPSIG") or (signature_expires is not None and signature_expires <= now):
        when = f" at {md.format_date(signature_expires)}" if signature_expires else ""
        return _fail(
            kind,
            "signature-expired",
            f"The signature expired{when}: its signer limited how long it may be used. Sign the entry again.",
            fingerprint,
        )
    if endorsement.issuer.upper() != f"OPENPGP:{fingerprint}":
        return _fail(
            kind,
            "issuer-mismatch",
            f"slreq:issuer is {endorsement.issuer!r} but the signature was made by the key OpenPGP:{fingerprint}.",
            fingerprint,
        )
    key = key_lookup(fingerprint)
    if key is None:  # the key left the keyring between the two gpg calls
        return _fail(kind, "unknown-key", f"The signing key {fingerprint} is not known to this Marketplace.")
    if endorsement.email.lower() not in key.emails:
        return _fail(
            kind,
            "email-not-on-key",
            f"slreq:email {endorsement.email} is not a user-ID e-mail of the key {fingerprint} "
            f"({', '.join(key.emails) or 'none'}).",
            fingerprint,
        )
    moments = [endorsement.created] + ([signed_at] if signed_at else [])
    if key.expires is not None and any(moment >= key.expires for moment in moments):
        return _fail(
            kind,
            "key-expired",
            f"The key {fingerprint} expired at {md.format_date(key.expires)}, before the entry was signed "
            f"(created {md.format_date(endorsement.created)}).",
            fingerprint,
        )
    if verdict.has("EXPKEYSIG") or (key.expires is not None and key.expires <= now):
        expired = f" at {md.format_date(key.expires)}" if key.expires else ""
        return _fail(
            kind,
            "key-expired",
            f"The key {fingerprint} expired{expired}: it can no longer endorse entries, whatever their created "
            f"time ({md.format_date(endorsement.created)}) says. Extend the key's expiry or sign with another key.",
            fingerprint,
        )
    if any(moment < key.created for moment in moments):
        return _fail(
            kind,
            "key-not-yet-valid",
            f"The entry claims to be created at {md.format_date(endorsement.created)}, before the key "
            f"{fingerprint} existed ({md.format_date(key.created)}).",
            fingerprint,
        )
    signer = key.uid_for(endorsement.email) or endorsement.email
    return SignatureCheck(kind, True, fingerprint, None, f"Signed by {signer} with the key {fingerprint}.")


def _good_notation(verdict: _GpgVerdict) -> str | None:
    """Our notation's value from the status lines of a good signature (gpg splits long data over lines)."""
    current: str | None = None
    chunks: dict[str, list[str]] = {}
    for key, value in verdict.ordered:
        if key == "NOTATION_NAME":
            current = value
            chunks.setdefault(value, [])
        elif key == "NOTATION_DATA" and current is not None:
            chunks[current].append(value)
        elif key not in ("NOTATION_FLAGS",):
            current = None
    if NOTATION not in chunks:
        return None
    # gpg percent-escapes spaces and control characters in NOTATION_DATA.
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), "".join(chunks[NOTATION]))


@register_verifier(f"{{{md.DSIG}}}Signature")
def _verify_xmldsig(element: etree._Element, payload: bytes, entry: md.Metadata, now: datetime) -> SignatureCheck:
    return _fail(
        "xmldsig",
        "unsupported-signature",
        "XML-DSig (legacy StratusLab X.509) signatures cannot be verified here yet; sign the entry with OpenPGP.",
    )


def verify(raw: bytes, metadata: md.Metadata, *, now: datetime | None = None) -> SignatureCheck:
    """Who signed ``raw`` (already parsed into ``metadata``), or the check that failed.

    The key and the signature must be usable ``now`` (default: the clock), whatever the entry claims: an
    upload is a fresh endorsement. Uses the trusted keyring only; registration, revocation and whether the
    key's owner holds the e-mail are the caller's checks (they live in the database)."""
    root = md.xml_root(raw)
    element = md.signature_element(root)
    if element is None:
        return _fail("none", "unsigned", "The entry is not signed: it must end with a sig:Signature element.")
    kind = md.SIGNATURE_ELEMENTS.get(element.tag, "none")
    verifier = VERIFIERS.get(element.tag)
    if verifier is None:
        return _fail(kind, "unsupported-signature", f"No verifier for the signature element {element.tag}.")
    root.remove(element)
    payload = etree.tostring(root, method="c14n", with_comments=True)
    return verifier(element, payload, metadata, now or datetime.now(UTC))


def shutdown_agent(gnupghome: Path) -> None:
    """Stop the gpg-agent that signing started for ``gnupghome`` (tests and one-off keyrings)."""
    subprocess.run(  # noqa: S603 - fixed argv
        [shutil.which("gpgconf") or "/usr/bin/gpgconf", "--homedir", str(gnupghome), "--kill", "gpg-agent"],
        capture_output=True,
        timeout=30,
        check=False,
        env={**os.environ},
    )
