"""Verifying an entry's signature against the trusted keyring, looked up by signature element, so that other
signature kinds (legacy XML-DSig) can be added beside OpenPGP."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

from marketplace import metadata as md
from marketplace.signing import x509
from marketplace.signing.gpg import (
    ARMOR_RE,
    GpgUnavailable,
    gpg_binary,
    gpg_for,
    gpg_run,
    scratch_home,
    trusted_home,
)
from marketplace.signing.keys import KeyInfo, key_lookup, timestamp
from marketplace.signing.signatures import NOTATION, notation_value

_STATUS_RE = re.compile(r"^\[GNUPG:\] (\S+) ?(.*)$", re.MULTILINE)


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


@dataclass(frozen=True)
class _GpgVerdict:
    statuses: dict[str, list[str]]
    ordered: tuple[tuple[str, str], ...]

    def has(self, key: str) -> bool:
        return key in self.statuses

    def first(self, key: str) -> list[str]:
        values = self.statuses.get(key) or [""]
        return values[0].split()


# Each thread's signature file (gpg reads a detached signature from a file): rewritten for every verification, in a
# private directory made once per process (in memory where the system offers /dev/shm), instead of a new temporary
# file created and removed each time.
_SIGNATURE_FILES = threading.local()
_SIGNATURE_DIRS: dict[int, str] = {}
_SIGNATURE_DIRS_LOCK = threading.Lock()


def _signature_dir() -> str:
    pid = os.getpid()
    with _SIGNATURE_DIRS_LOCK:
        directory = _SIGNATURE_DIRS.get(pid)
        if directory is None or not os.path.isdir(directory):
            memory = "/dev/shm"  # noqa: S108 - a private directory (mode 700) made inside it
            parent = memory if os.path.isdir(memory) and os.access(memory, os.W_OK) else None
            directory = tempfile.mkdtemp(prefix="alto-sig-", dir=parent)
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            _SIGNATURE_DIRS[pid] = directory
        return directory


def _signature_file(armored: str) -> str:
    """This thread's signature file, now holding ``armored``."""
    path = os.path.join(_signature_dir(), f"{os.getpid()}-{threading.get_ident()}.asc")
    with open(path, "w", encoding="ascii") as signature:
        signature.write(armored)
    return path


def _run_verify(armored: str, payload: bytes) -> _GpgVerdict:
    """One gpg process: the detached signature (from this thread's signature file) over ``payload`` (on stdin)."""
    gpg = gpg_for(trusted_home())
    try:
        result = gpg.verify_data(_signature_file(armored), payload)
    except OSError as exc:  # gpg vanished since the keyring was opened
        raise GpgUnavailable(f"gpg could not run: {exc}") from exc
    ordered = tuple(_STATUS_RE.findall(result.stderr or ""))
    statuses: dict[str, list[str]] = {}
    for key, value in ordered:
        statuses.setdefault(key, []).append(value)
    return _GpgVerdict(statuses, ordered)


def _signature_notations(armored: str) -> dict[str, str]:
    """Notations of a signature read from its packets, without verifying it (used only after a failure)."""
    with scratch_home() as home:
        listing = gpg_run(
            [gpg_binary(), "--homedir", str(home), "--batch", "--no-tty", "--list-packets"],
            stdin=armored.encode("ascii", "replace"),
        )
    notations = {}
    for line in listing.decode("utf-8", "replace").splitlines():
        match = re.search(r"\(notation: ([^=]+)=(.*)\)\s*$", line)
        if match:
            notations[match.group(1)] = match.group(2)
    return notations


def _fail(kind: str, check: str, message: str, fingerprint: str | None = None) -> SignatureCheck:
    return SignatureCheck(kind=kind, verified=False, fingerprint=fingerprint, check=check, message=message)


# (signature element, the document without it as C14N bytes, the whole document as received, the entry, now):
# the key and the signature must be usable at ``now``.
Verifier = Callable[[etree._Element, bytes, bytes, md.Metadata, datetime], SignatureCheck]
VERIFIERS: dict[str, Verifier] = {}

# What is known about a trusted key, by fingerprint (None: nothing): its user IDs, creation and expiry.
KeyFacts = Callable[[str], KeyInfo | None]
_KEY_FACTS: list[KeyFacts] = []


def register_key_facts(source: KeyFacts) -> None:
    """Where verification reads a signing key's user IDs, creation and expiry before asking the keyring: the
    Marketplace registers its database's record of registered keys and the site key (``MarketplaceConfig.ready``),
    so that verifying an entry takes one gpg process, not three."""
    _KEY_FACTS[:] = [source]


# Facts the caller of :func:`verify` already holds (it read the key named by the entry's issuer), by fingerprint.
_GIVEN_FACTS: ContextVar[Mapping[str, KeyInfo] | None] = ContextVar("given_key_facts", default=None)


def key_facts(fingerprint: str) -> KeyInfo | None:
    """What the caller of :func:`verify` gave, else the registered source's facts about a key, else the trusted
    keyring's (a key gpg trusts but the database does not record is refused by the caller anyway; the keyring
    then only words the message)."""
    given = (_GIVEN_FACTS.get() or {}).get(fingerprint.upper())
    if given is not None:
        return given
    for source in _KEY_FACTS:
        found = source(fingerprint)
        if found is not None:
            return found
    return key_lookup(fingerprint)


def register_verifier(tag: str) -> Callable[[Verifier], Verifier]:
    """Register the verifier for a signature element (Clark name)."""

    def register(function: Verifier) -> Verifier:
        VERIFIERS[tag] = function
        return function

    return register


@register_verifier(md.OPENPGP_SIGNATURE)
def _verify_openpgp(
    element: etree._Element, payload: bytes, raw: bytes, entry: md.Metadata, now: datetime
) -> SignatureCheck:
    kind = "openpgp"
    armored = (element.text or "").strip()
    if not armored.isascii() or not ARMOR_RE.fullmatch(armored):
        return _fail(kind, "signature-malformed", "sig:Signature does not hold an ASCII-armored OpenPGP signature.")
    verdict = _run_verify(armored, payload)
    if len(verdict.statuses.get("NEWSIG", [])) > 1:
        return _fail(kind, "signature-malformed", "sig:Signature holds more than one OpenPGP signature.")
    endorsement = entry.endorsement
    expected = notation_value(entry.identifier, endorsement.email, endorsement.created)
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
    signed_at = timestamp(valid[2])
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
    signature_expires = timestamp(valid[3]) if len(valid) > 3 and valid[3] not in ("", "0") else None
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
    key = key_facts(fingerprint)
    if key is None:  # trusted by the keyring, yet not recorded (or it left the keyring meanwhile)
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
def _verify_xmldsig(
    element: etree._Element, payload: bytes, raw: bytes, entry: md.Metadata, now: datetime
) -> SignatureCheck:
    """A legacy StratusLab entry: the certificate must chain to a CA of ``MARKETPLACE_X509_CA_DIR`` and name
    the endorser — its subject DN is ``slreq:subject``, its issuer DN ``slreq:issuer``, and ``slreq:email`` one
    of its e-mails."""
    kind = "xmldsig"
    try:
        signer = x509.verify(raw, element, now=now)
    except x509.X509Refused as refused:
        return _fail(kind, refused.check, refused.message, refused.fingerprint)
    endorsement = entry.endorsement
    fingerprint = signer.fingerprint
    if not x509.dn_equal(endorsement.subject, signer.subject):
        return _fail(
            kind,
            "subject-mismatch",
            f"slreq:subject is {endorsement.subject!r} but the signature was made with the certificate of "
            f"{signer.subject_text}.",
            fingerprint,
        )
    if not x509.dn_equal(endorsement.issuer, signer.issuer):
        return _fail(
            kind,
            "issuer-mismatch",
            f"slreq:issuer is {endorsement.issuer!r} but the signing certificate was issued by "
            f"{x509.dn_text(signer.issuer)}.",
            fingerprint,
        )
    if endorsement.email.lower() not in signer.emails:
        return _fail(
            kind,
            "email-not-on-certificate",
            f"slreq:email {endorsement.email} is not an e-mail of the signing certificate "
            f"({', '.join(signer.emails) or 'none'}).",
            fingerprint,
        )
    return SignatureCheck(
        kind,
        True,
        fingerprint,
        None,
        f"Signed by {signer.subject_text} with a certificate of {x509.dn_text(signer.issuer)}.",
    )


def verify(
    raw: bytes, metadata: md.Metadata, *, now: datetime | None = None, known_keys: Mapping[str, KeyInfo] | None = None
) -> SignatureCheck:
    """Who signed ``raw`` (already parsed into ``metadata``), or the check that failed.

    The key and the signature must be usable ``now`` (default: the clock), whatever the entry claims: an
    upload is a fresh endorsement. Uses the trusted keyring only, in one gpg process; the key's user IDs,
    creation and expiry come from ``known_keys`` (by fingerprint) or :func:`key_facts`. Registration, revocation
    and whether the key's owner holds the e-mail are the caller's checks (they live in the database)."""
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
    token = _GIVEN_FACTS.set({fp.upper(): info for fp, info in (known_keys or {}).items()})
    try:
        return verifier(element, payload, raw, metadata, now or datetime.now(UTC))
    finally:
        _GIVEN_FACTS.reset(token)
