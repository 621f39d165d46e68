"""A small certificate authority for the legacy-signature tests, made with cryptography, and entries signed the
way StratusLab's tools signed them: an enveloped XML-DSig (RSA-SHA1 by default) carrying the signer's
certificate, made with signxml.

``CertificateAuthority.create(name)`` → a self-signed CA; ``ca.issue(common_name, email=…)`` → a ``Credential``
(certificate + key) it signed; ``ca.revoke(credential)`` → the CA's CRL names it; ``ca.install(directory)``
writes the CA certificate (and CRL) as the grid's ``/etc/grid-security/certificates`` holds them.
``xmldsig_sign(document, credential)`` endorses the document with the credential's identity and signs it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from lxml import etree
from signxml import DigestAlgorithm, SignatureMethod, XMLSigner, methods

from marketplace import metadata

# One key size for all test keys: 2048 bits keeps key generation quick.
_KEY_BITS = 2048
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)


def _name(common_name: str, *, organisation: str = "Altostratus Test Grid", email: str | None = None) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ]
    if email:
        attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attributes)


@dataclass
class Credential:
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey
    chain: tuple[x509.Certificate, ...] = ()  # intermediates between it and the root, nearest first

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    @property
    def issuer(self) -> str:
        return self.certificate.issuer.rfc4514_string()

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


@dataclass
class CertificateAuthority:
    credential: Credential
    revoked: list[x509.Certificate] = field(default_factory=list)

    @classmethod
    def create(cls, common_name: str, *, not_after: dt.datetime | None = None) -> CertificateAuthority:
        key = _key()
        name = _name(common_name)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=365))
            .not_valid_after(not_after or NOW + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(Credential(certificate, key))

    @property
    def certificate(self) -> x509.Certificate:
        return self.credential.certificate

    def issue_ca(self, common_name: str) -> CertificateAuthority:
        """An intermediate CA signed by this one."""
        key = _key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=60))
            .not_valid_after(NOW + dt.timedelta(days=1800))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.certificate.public_key()), critical=False
            )
            .sign(self.credential.key, hashes.SHA256())
        )
        return CertificateAuthority(Credential(certificate, key))

    def issue(
        self,
        common_name: str,
        *,
        email: str | None = None,
        email_in_subject: bool = False,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> Credential:
        key = _key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, email=email if email_in_subject else None))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - dt.timedelta(days=30))
            .not_valid_after(not_after or NOW + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=True,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.certificate.public_key()), critical=False
            )
        )
        if email and not email_in_subject:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        return Credential(builder.sign(self.credential.key, hashes.SHA256()), key)

    def revoke(self, credential: Credential) -> None:
        self.revoked.append(credential.certificate)

    def crl(self) -> x509.CertificateRevocationList:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(NOW - dt.timedelta(days=1))
            .next_update(NOW + dt.timedelta(days=30))
        )
        for certificate in self.revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(certificate.serial_number)
                .revocation_date(NOW - dt.timedelta(hours=1))
                .build()
            )
        return builder.sign(self.credential.key, hashes.SHA256())

    def install(self, directory: Path) -> Path:
        """Write the CA certificate as ``<hash>.0`` style file and its CRL as ``.r0``, as the grid lays them out."""
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"{self.certificate.serial_number:x}"[:8]
        (directory / f"{stem}.0").write_bytes(self.credential.pem())
        (directory / f"{stem}.r0").write_bytes(self.crl().public_bytes(serialization.Encoding.PEM))
        return directory


class _LegacySigner(XMLSigner):
    """signxml refuses to make SHA-1 signatures; StratusLab's tools made them, and the tests make them too."""

    def check_deprecated_methods(self) -> None:
        return None


def xmldsig_sign(
    document: bytes,
    credential: Credential,
    *,
    email: str,
    subject: str | None = None,
    issuer: str | None = None,
    created: dt.datetime = NOW,
    algorithm: SignatureMethod = SignatureMethod.RSA_SHA1,
    digest: DigestAlgorithm = DigestAlgorithm.SHA1,
) -> bytes:
    """``document`` endorsed as ``email`` (subject and issuer DNs from the certificate unless given) and signed
    with an enveloped XML-DSig over the whole document, the certificate (and its chain) in ds:KeyInfo."""
    endorsed = metadata.endorse(
        document,
        email=email,
        subject=subject if subject is not None else credential.subject,
        issuer=issuer if issuer is not None else credential.issuer,
        created=created,
    )
    root = etree.fromstring(endorsed)
    signer = _LegacySigner(
        method=methods.enveloped,
        signature_algorithm=algorithm,
        digest_algorithm=digest,
        c14n_algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    )
    pem_chain = [
        c.public_bytes(serialization.Encoding.PEM).decode() for c in (credential.certificate, *credential.chain)
    ]
    key = credential.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    signed = signer.sign(root, key=key, cert=pem_chain)
    return etree.tostring(signed, xml_declaration=True, encoding="UTF-8")
