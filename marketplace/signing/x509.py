"""Legacy StratusLab signatures: an enveloped XML-DSig over the whole ``rdf:RDF`` document, made with an X.509
certificate (often a grid certificate) and trusted through the CA certificates the site names in
``MARKETPLACE_X509_CA_DIR`` — the layout of the grid's ``/etc/grid-security/certificates``: one PEM certificate
per file (``*.0``, ``*.pem``, ``*.crt``) and CRLs beside them (``*.r0``, ``*.crl``, ``*.crl.pem``).

signxml verifies the signature and the certificate chain (cryptography's X.509 path validation at ``now``);
this module adds what the Marketplace needs around it: the reference must cover the whole document, the
certificate must not be revoked by its CA's CRL, and the signer's identity (subject DN, e-mail, issuer DN) is
returned for the caller to bind to the entry's ``slreq:subject`` / ``slreq:email`` / ``slreq:issuer``."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from django.conf import settings
from lxml import etree
from signxml import DigestAlgorithm, SignatureConfiguration, SignatureMethod, XMLVerifier
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature
from signxml.util import X509CertChainVerifier

DSIG = "http://www.w3.org/2000/09/xmldsig#"
_NS = {"ds": DSIG}
_CERT_SUFFIXES = (".0", ".1", ".2", ".pem", ".crt")
_CRL_SUFFIXES = (".r0", ".r1", ".r2", ".crl", ".crl.pem")
# StratusLab signed with RSA-SHA1; SHA-1 stays accepted for these legacy entries only, beside the SHA-2 family.
_METHODS = frozenset(
    {
        SignatureMethod.RSA_SHA1,
        SignatureMethod.RSA_SHA256,
        SignatureMethod.RSA_SHA384,
        SignatureMethod.RSA_SHA512,
        SignatureMethod.ECDSA_SHA256,
        SignatureMethod.ECDSA_SHA384,
        SignatureMethod.ECDSA_SHA512,
    }
)
_DIGESTS = frozenset({DigestAlgorithm.SHA1, DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512})


class X509Refused(Exception):
    """A legacy signature that does not verify; ``check`` names the rule."""

    def __init__(self, check: str, message: str, fingerprint: str | None = None) -> None:
        super().__init__(message)
        self.check = check
        self.message = message
        self.fingerprint = fingerprint


@dataclass(frozen=True)
class Signer:
    """Who made a good legacy signature: the verified end-entity certificate."""

    subject: x509.Name
    issuer: x509.Name
    emails: tuple[str, ...]  # lower-case: subjectAltName rfc822Name values and emailAddress in the subject
    fingerprint: str  # SHA-1 of the certificate, 40 upper-case hex digits (as `openssl x509 -fingerprint`)

    @property
    def subject_text(self) -> str:
        return dn_text(self.subject)


@dataclass(frozen=True)
class _Anchors:
    roots: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...]


_cache: dict[str, tuple[tuple[tuple[str, float], ...], _Anchors]] = {}


def trust_anchors(directory: str | Path | None = None) -> _Anchors:
    """The CA certificates and CRLs of ``directory`` (default: the setting), re-read when a file changes."""
    folder = Path(directory if directory is not None else getattr(settings, "MARKETPLACE_X509_CA_DIR", "") or "")
    if not str(folder) or not folder.is_dir():
        return _Anchors((), ())
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_CERT_SUFFIXES + _CRL_SUFFIXES))
    stamp = tuple((p.name, p.stat().st_mtime) for p in files)
    cached = _cache.get(str(folder))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    roots: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    for path in files:
        data = path.read_bytes()
        try:
            if path.name.endswith(_CRL_SUFFIXES):
                crls.append(_load_crl(data))
            else:
                roots.extend(x509.load_pem_x509_certificates(data))
        except ValueError:
            continue  # a file that is not what its name says is no anchor (the grid directories hold others too)
    anchors = _Anchors(tuple(roots), tuple(crls))
    _cache[str(folder)] = (stamp, anchors)
    return anchors


def _load_crl(data: bytes) -> x509.CertificateRevocationList:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


class _ChainVerifier(X509CertChainVerifier):
    """signxml's chain verifier with the store built from the site's CA directory, keeping the verified chain."""

    def __init__(self, anchors: _Anchors, **kwargs: object) -> None:
        super().__init__(ca_pem_file="", **kwargs)  # type: ignore[arg-type]
        self._anchors = anchors
        self.chain: list[x509.Certificate] = []

    @property
    def store(self) -> x509.verification.Store:
        return x509.verification.Store(list(self._anchors.roots))

    def _do_verify(self, cert_chain: list[x509.Certificate]) -> x509.Certificate:
        leaf, intermediates = cert_chain[0], cert_chain[1:]
        self.chain = list(self.verifier.verify(leaf=leaf, intermediates=intermediates).chain)
        return self.chain[0]


class _Verifier(XMLVerifier):
    def __init__(self, anchors: _Anchors) -> None:
        super().__init__()
        self._anchors = anchors
        self.chain_verifier: _ChainVerifier | None = None

    def get_cert_chain_verifier(self, ca_pem_file, ee_policy, ca_policy):  # type: ignore[no-untyped-def]
        self.chain_verifier = _ChainVerifier(
            self._anchors,
            verification_time=self._get_cert_verification_time(),
            ee_policy=ee_policy,
            ca_policy=ca_policy,
        )
        return self.chain_verifier


def verify(raw: bytes, signature: etree._Element, *, now: datetime) -> Signer:
    """Verify the enveloped XML-DSig ``signature`` (the last child of the document ``raw``) at ``now``.

    Raises ``X509Refused`` naming the failed check: ``signature-malformed`` (not an enveloped signature over
    the whole document with one X.509 certificate chain), ``certificate-expired`` / ``certificate-not-yet-valid``
    (the signer's certificate at ``now``), ``certificate-untrusted`` (no chain to a CA of
    ``MARKETPLACE_X509_CA_DIR``, or no CA configured), ``certificate-revoked`` (on its CA's CRL), ``bad-signature``
    (the document or the signature was changed)."""
    _check_shape(signature)
    leaf = _leaf_certificate(signature)
    fingerprint = leaf.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - an identifier, not a security check
    _check_validity(leaf, now, fingerprint)
    anchors = trust_anchors()
    if not anchors.roots:
        raise X509Refused(
            "certificate-untrusted",
            "This Marketplace trusts no certificate authority for XML-DSig signatures (MARKETPLACE_X509_CA_DIR).",
            fingerprint,
        )
    verifier = _Verifier(anchors)
    config = SignatureConfiguration(
        require_x509=True,
        location="./",
        expect_references=1,
        signature_methods=_METHODS,
        digest_algorithms=_DIGESTS,
        verification_time=now,
    )
    try:
        verifier.verify(raw, expect_config=config)
    except InvalidCertificate as exc:
        raise X509Refused(
            "certificate-untrusted",
            f"The signing certificate ({dn_text(leaf.subject)}, issued by {dn_text(leaf.issuer)}) does not chain "
            f"to a certificate authority this Marketplace trusts: {exc}",
            fingerprint,
        ) from exc
    except InvalidDigest as exc:
        raise X509Refused(
            "bad-signature",
            "The signature does not match the document: it was changed after it was signed.",
            fingerprint,
        ) from exc
    except InvalidInput as exc:
        raise X509Refused("signature-malformed", f"The XML-DSig signature cannot be used: {exc}", fingerprint) from exc
    except InvalidSignature as exc:
        raise X509Refused("bad-signature", f"The XML-DSig signature does not verify: {exc}", fingerprint) from exc
    except (ValueError, etree.LxmlError) as exc:
        raise X509Refused("signature-malformed", f"The XML-DSig signature cannot be read: {exc}", fingerprint) from exc
    chain = verifier.chain_verifier.chain if verifier.chain_verifier is not None else []
    if not chain or chain[0] != leaf:
        raise X509Refused(
            "signature-malformed",
            "The certificate that verified the signature is not the first one in ds:X509Data.",
            fingerprint,
        )
    _check_revocation(chain, anchors, now, fingerprint)
    return Signer(subject=leaf.subject, issuer=leaf.issuer, emails=certificate_emails(leaf), fingerprint=fingerprint)


def chain_verify(leaf: x509.Certificate, intermediates: list[x509.Certificate], *, now: datetime) -> None:
    """Whether ``leaf`` (with the ``intermediates`` its signature carried) is a signer this Marketplace trusts at
    ``now``: valid then, chaining to a CA of ``MARKETPLACE_X509_CA_DIR`` and on none of their CRLs — the checks
    ``verify`` makes, for signatures of other kinds (S/MIME image lists). Raises ``X509Refused`` with the same
    rules: ``certificate-not-yet-valid``, ``certificate-expired``, ``certificate-untrusted``,
    ``certificate-revoked``."""
    fingerprint = leaf.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - an identifier, not a security check
    _check_validity(leaf, now, fingerprint)
    anchors = trust_anchors()
    if not anchors.roots:
        raise X509Refused(
            "certificate-untrusted",
            "This Marketplace trusts no certificate authority for X.509 signatures (MARKETPLACE_X509_CA_DIR).",
            fingerprint,
        )
    verifier = _ChainVerifier(anchors, verification_time=now)
    try:
        verifier.verify([leaf, *intermediates])
    except InvalidCertificate as exc:
        raise X509Refused(
            "certificate-untrusted",
            f"The signing certificate ({dn_text(leaf.subject)}, issued by {dn_text(leaf.issuer)}) does not chain "
            f"to a certificate authority this Marketplace trusts: {exc}",
            fingerprint,
        ) from exc
    if not verifier.chain or verifier.chain[0] != leaf:
        raise X509Refused("certificate-untrusted", "The signing certificate is not the one that was verified.")
    _check_revocation(verifier.chain, anchors, now, fingerprint)


def _check_validity(leaf: x509.Certificate, now: datetime, fingerprint: str) -> None:
    if now < leaf.not_valid_before_utc:
        raise X509Refused(
            "certificate-not-yet-valid",
            f"The signing certificate ({dn_text(leaf.subject)}) is valid only from "
            f"{leaf.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}.",
            fingerprint,
        )
    if now > leaf.not_valid_after_utc:
        raise X509Refused(
            "certificate-expired",
            f"The signing certificate ({dn_text(leaf.subject)}) expired at "
            f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}: what is signed with it is no longer accepted.",
            fingerprint,
        )


def _check_shape(signature: etree._Element) -> None:
    """One reference, to the whole document (``URI=""``), enveloped: anything else could sign part of it."""
    references = signature.findall("ds:SignedInfo/ds:Reference", _NS)
    if len(references) != 1 or references[0].get("URI") != "":
        raise X509Refused(
            "signature-malformed",
            'An XML-DSig entry signature must hold exactly one ds:Reference with URI="" (the whole document).',
        )
    transforms = [t.get("Algorithm") for t in references[0].findall("ds:Transforms/ds:Transform", _NS)]
    if f"{DSIG}enveloped-signature" not in transforms:
        raise X509Refused("signature-malformed", "The XML-DSig signature is not enveloped (no enveloped-signature).")


def _leaf_certificate(signature: etree._Element) -> x509.Certificate:
    texts = [c.text or "" for c in signature.findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", _NS)]
    if not texts:
        raise X509Refused(
            "signature-malformed", "The XML-DSig signature carries no certificate (ds:KeyInfo/ds:X509Data)."
        )
    try:
        return x509.load_der_x509_certificate(base64.b64decode(re.sub(r"\s+", "", texts[0]), validate=True))
    except (ValueError, binascii.Error) as exc:
        raise X509Refused("signature-malformed", f"The signature's certificate cannot be read: {exc}") from exc


def _check_revocation(chain: list[x509.Certificate], anchors: _Anchors, now: datetime, fingerprint: str) -> None:
    """Each certificate of the chain below its CA against that CA's CRL, when the directory holds one."""
    for cert, issuer in zip(chain, chain[1:], strict=False):
        for crl in anchors.crls:
            if crl.issuer != issuer.subject:
                continue
            try:
                crl_key = issuer.public_key()
                if not crl.is_signature_valid(crl_key):  # type: ignore[arg-type]
                    continue
            except (TypeError, CryptoInvalidSignature):
                continue
            revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if revoked is not None and revoked.revocation_date_utc <= now:
                raise X509Refused(
                    "certificate-revoked",
                    f"The certificate {dn_text(cert.subject)} was revoked by {dn_text(issuer.subject)} on "
                    f"{revoked.revocation_date_utc:%Y-%m-%dT%H:%M:%SZ}.",
                    fingerprint,
                )


def certificate_emails(cert: x509.Certificate) -> tuple[str, ...]:
    emails = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails += alt.get_values_for_type(x509.RFC822Name)
    except x509.ExtensionNotFound:
        pass
    return tuple(dict.fromkeys(e.strip().lower() for e in emails if e.strip()))


# The attribute names grid DNs use beyond RFC 4514's own (OpenSSL writes emailAddress; some tools E).
_NAMES_IN = {name: NameOID.EMAIL_ADDRESS for name in ("emailAddress", "EMAILADDRESS", "E", "Email")} | {
    "serialNumber": NameOID.SERIAL_NUMBER,
    "UID": NameOID.USER_ID,
}
_NAMES_OUT = {NameOID.EMAIL_ADDRESS: "emailAddress", NameOID.SERIAL_NUMBER: "serialNumber"}


def dn_text(name: x509.Name) -> str:
    """A DN as RFC 4514 writes it (``CN=…,O=…,C=…``; e-mail attributes as OpenSSL names them)."""
    return name.rfc4514_string(_NAMES_OUT)


def dn_parse(text: str) -> x509.Name | None:
    """A DN written as RFC 4514 (``CN=Jo,O=Lab,C=FR``) or in OpenSSL's grid form (``/C=FR/O=Lab/CN=Jo``);
    None when it is neither."""
    text = text.strip()
    try:
        if text.startswith("/"):
            parts = [p for p in re.split(r"/(?=[A-Za-z][A-Za-z0-9.]*=)", text) if p]
            text = ",".join(_escape_rdn(p) for p in reversed(parts))
        return x509.Name.from_rfc4514_string(text, _NAMES_IN)
    except ValueError:
        return None


def _escape_rdn(part: str) -> str:
    key, _, value = part.partition("=")
    escaped = re.sub(r'([,+"\\<>;])', r"\\\1", value)
    if escaped.startswith((" ", "#")):
        escaped = "\\" + escaped
    if escaped.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    return f"{key}={escaped}"


def dn_equal(text: str, name: x509.Name) -> bool:
    """Whether the DN ``text`` (either form) names ``name``: the same attributes in the same order, values
    compared as written (DNs are case-sensitive in the grid's authorisation files too)."""
    parsed = dn_parse(text)
    return parsed is not None and parsed == name
