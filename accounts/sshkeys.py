"""Parsing of OpenSSH public keys with ``cryptography`` (no regular expressions)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from core.errors import ApplicationError

MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class ParsedSshKey:
    key_type: str
    bits: int
    fingerprint: str
    comment: str

    openssh: str  # "<type> <base64>", as OpenSSH writes it without the comment

    @property
    def line(self) -> str:
        return f"{self.openssh} {self.comment}".strip()


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, code="invalid-ssh-key", extra={"errors": {"public_key": [message]}})


def parse_public_key(text: str) -> ParsedSshKey:
    """Parse one OpenSSH public key line (``ssh-ed25519 AAAA… comment``) or refuse it with a reason."""
    text = text.strip()
    if not text:
        raise _invalid("the public key is empty")
    if "PRIVATE KEY" in text:
        raise _invalid("this is a private key: paste the public key (the .pub file) and keep the private key secret")
    if len(text.splitlines()) > 1:
        raise _invalid("paste exactly one public key, on one line")
    parts = text.split(None, 2)
    comment = parts[2] if len(parts) == 3 else ""
    try:
        key = serialization.load_ssh_public_key(" ".join(parts[:2]).encode())
    except UnsupportedAlgorithm:
        raise _invalid(
            f"unknown or unsupported key type {parts[0]!r}: expected an OpenSSH public key such as "
            "'ssh-ed25519 AAAA… comment'"
        ) from None
    except (ValueError, IndexError):
        raise _invalid("not an OpenSSH public key (expected e.g. 'ssh-ed25519 AAAA… comment')") from None

    if isinstance(key, dsa.DSAPublicKey):
        raise _invalid("DSA keys are no longer accepted by OpenSSH: use ed25519 or RSA")
    if isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        if bits < MIN_RSA_BITS:
            raise _invalid(f"RSA keys must have at least {MIN_RSA_BITS} bits, this one has {bits}")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        bits = key.curve.key_size
    elif isinstance(key, ed25519.Ed25519PublicKey):
        bits = 256
    elif isinstance(key, ed448.Ed448PublicKey):
        bits = 456
    else:  # pragma: no cover - cryptography returns only the types above for SSH keys
        raise _invalid("unsupported SSH key type")

    openssh = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    key_type, blob = openssh.split()[:2]
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    fingerprint = "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    return ParsedSshKey(key_type=key_type, bits=bits, fingerprint=fingerprint, comment=comment, openssh=openssh)
