"""S/MIME signatures of HEPiX image lists (issue 16): the adapter to ``openssl cms``, the only code that runs it.

cryptography (the pinned version) signs PKCS#7 but cannot verify it, so ``openssl cms -verify`` checks the
signature over the content — the digest of the content and the signer's signature over it — and hands back the
content it verified and the certificates the message carries. Whom to trust is decided here, not by openssl:
the signer's certificate goes through :func:`marketplace.signing.x509.chain_verify`, the same CA directory
(``MARKETPLACE_X509_CA_DIR``), CRLs and rule names as legacy XML-DSig entries. The caller reads the list only
from the content openssl verified, never from the message itself.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509 as crypto_x509
from cryptography.hazmat.primitives import hashes

from core.errors import TransientError
from marketplace.signing import x509
from marketplace.signing.x509 import Signer, X509Refused

OPENSSL_TIMEOUT = 60.0


class SmimeUnavailable(TransientError):
    """openssl could not run (missing, killed, timed out): nothing was decided about the message."""


@dataclass(frozen=True)
class SignedContent:
    """What a good S/MIME signature covers, and who made it."""

    content: bytes
    signer: Signer


def openssl_binary() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise SmimeUnavailable("openssl is not installed: S/MIME image lists cannot be verified.")
    return found


def verify(raw: bytes, *, now: datetime) -> SignedContent:
    """The content of the S/MIME message ``raw`` (``multipart/signed`` or opaque ``application/pkcs7-mime``) and
    its signer, checked at ``now``.

    Raises ``X509Refused`` naming the failed rule: ``signature-malformed`` (not an S/MIME signed message, or not
    exactly one signer), ``bad-signature`` (the content or the signature was changed), and the certificate rules
    of :func:`x509.chain_verify`; ``SmimeUnavailable`` when openssl cannot run."""
    if b"content-type:" not in raw[:65536].lower():
        raise X509Refused("signature-malformed", "The image list is not an S/MIME signed message (no MIME headers).")
    with tempfile.TemporaryDirectory(prefix="alto-smime-") as scratch:
        folder = Path(scratch)
        message, content, signers, certs = (folder / n for n in ("message", "content", "signer.pem", "certs.pem"))
        message.write_bytes(raw)
        command = [
            openssl_binary(),
            "cms",
            "-verify",
            "-noverify",  # the chain is checked below against the site's CAs and CRLs, with our rule names
            "-inform",
            "SMIME",
            "-in",
            str(message),
            "-out",
            str(content),
            "-signer",
            str(signers),
            "-certsout",
            str(certs),
        ]
        try:
            result = subprocess.run(  # noqa: S603 - fixed arguments, our own files
                command, capture_output=True, timeout=OPENSSL_TIMEOUT, check=False, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SmimeUnavailable(f"openssl could not verify the image list: {exc}") from exc
        errors = result.stderr.decode("utf-8", "replace")
        if result.returncode != 0:
            raise _refusal(errors)
        signer_certs = _certificates(signers)
        if len(signer_certs) != 1:
            raise X509Refused(
                "signature-malformed",
                f"An image list must be signed by exactly one certificate; this one has {len(signer_certs)} signers.",
            )
        leaf = signer_certs[0]
        intermediates = [c for c in _certificates(certs) if c != leaf]
        verified = _text_body(content.read_bytes())
    x509.chain_verify(leaf, intermediates, now=now)
    fingerprint = leaf.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - an identifier, as in x509.py
    signer = Signer(
        subject=leaf.subject, issuer=leaf.issuer, emails=x509.certificate_emails(leaf), fingerprint=fingerprint
    )
    return SignedContent(verified, signer)


def _text_body(content: bytes) -> bytes:
    """The signed content without the ``Content-Type: text/plain`` header that text-mode signers (openssl's and
    M2Crypto's ``-text``/``PKCS7_TEXT``) put inside what they sign; the header is signed too, so dropping it keeps
    only signed bytes. Any other content is returned as it is."""
    head, blank, body = content.replace(b"\r\n", b"\n").partition(b"\n\n")
    if not blank or not head.lower().startswith(b"content-type:"):
        return content
    fields = [line.split(b":", 1) for line in head.split(b"\n")]
    if all(len(f) == 2 and f[0].strip().lower().startswith(b"content-") for f in fields) and any(
        f[0].strip().lower() == b"content-type" and f[1].strip().lower().startswith(b"text/plain") for f in fields
    ):
        return body
    return content


def _refusal(errors: str) -> X509Refused:
    """openssl's complaint as one of our rules: a digest or signature that does not match is ``bad-signature``;
    anything else means the message is not a signed message we can read."""
    lowered = errors.lower()
    if "verification failure" in lowered or "content verify error" in lowered or "digest failure" in lowered:
        return X509Refused(
            "bad-signature", "The image list's S/MIME signature does not match its content: it was changed."
        )
    detail = next((line for line in errors.splitlines() if line.strip()), "unreadable")
    return X509Refused("signature-malformed", f"The image list is not a readable S/MIME signed message: {detail}")


def _certificates(path: Path) -> list[crypto_x509.Certificate]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    try:
        return crypto_x509.load_pem_x509_certificates(data) if data.strip() else []
    except ValueError as exc:
        raise X509Refused("signature-malformed", f"The image list's certificates cannot be read: {exc}") from exc
