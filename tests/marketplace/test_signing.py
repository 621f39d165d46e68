"""OpenPGP signatures of entries (DESIGN.md §2.2) with the real gpg: keys, signing, every verification check."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess

import pytest
from django.conf import settings

from marketplace import metadata, signing
from marketplace.metadata import MetadataInvalid
from marketplace.signing import SigningError
from tests.marketplace.keys import (
    CREATOR_SECOND_UID,
    CREATOR_UID,
    KEY_BIRTH,
    PgpKeys,
    entry_document,
    generate_key,
    gpg_argv,
)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def keyring_only(monkeypatch):
    """These tests check the adapter alone: a key's facts come from the trusted keyring, not the database."""
    monkeypatch.setattr(signing.verification, "_KEY_FACTS", [])


def trusted_fingerprints() -> set[str]:
    listing = subprocess.run(
        ["gpg", "--homedir", str(settings.MARKETPLACE_GNUPG_HOME), "--with-colons", "--list-keys"],
        capture_output=True,
        check=False,
    )
    return {line.split(":")[9] for line in listing.stdout.decode().splitlines() if line.startswith("fpr:")}


def verify(raw: bytes) -> signing.SignatureCheck:
    return signing.verify(raw, metadata.parse(raw))


def signature_of(raw: bytes) -> bytes:
    return raw[raw.index(b"<sig:Signature") : raw.index(b"</sig:Signature>") + len(b"</sig:Signature>")]


# ------------------------------------------------------------------------------------------------- keys


def test_inspecting_a_key_reads_its_fingerprint_user_ids_and_dates(pgp_keys: PgpKeys):
    info = signing.key_inspect(pgp_keys.creator.armored)

    assert info.fingerprint == pgp_keys.creator.fingerprint
    assert re.fullmatch(r"[0-9A-F]{40}", info.fingerprint)
    assert info.uids == (CREATOR_UID, CREATOR_SECOND_UID)
    assert info.emails == ("creator@example.org", "casey.c@lab.example.net")
    assert info.created == KEY_BIRTH
    assert info.expires is None
    assert info.armored.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert signing.key_inspect(info.armored).fingerprint == info.fingerprint


def test_inspecting_a_key_does_not_trust_it(pgp_keys: PgpKeys):
    signing.key_inspect(pgp_keys.untrusted.armored)

    assert pgp_keys.untrusted.fingerprint not in trusted_fingerprints()


def test_inspecting_reads_the_expiry(pgp_keys: PgpKeys):
    info = signing.key_inspect(pgp_keys.expiring.armored)

    assert info.expires is not None
    assert dt.timedelta(days=365) <= info.expires - KEY_BIRTH <= dt.timedelta(days=366)


@pytest.mark.parametrize(
    ("armored", "code"),
    [
        ("", "pgp-key-invalid"),
        ("hello", "pgp-key-invalid"),
        ("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnonsense\n-----END PGP PUBLIC KEY BLOCK-----\n", "pgp-key-invalid"),
    ],
    ids=["empty", "text", "broken-armor"],
)
def test_what_is_not_a_public_key_is_refused(armored, code):
    with pytest.raises(SigningError) as refused:
        signing.key_inspect(armored)

    assert refused.value.code == code


def test_a_secret_key_is_refused(pgp_keys: PgpKeys):
    with pytest.raises(SigningError) as refused:
        signing.key_inspect(pgp_keys.secret_armored)

    assert refused.value.code == "pgp-key-secret"
    assert "public key" in refused.value.message


def test_a_secret_key_relabelled_as_public_is_refused(pgp_keys: PgpKeys):
    relabelled = pgp_keys.secret_armored.replace("PRIVATE KEY BLOCK", "PUBLIC KEY BLOCK")

    with pytest.raises(SigningError) as refused:
        signing.key_inspect(relabelled)

    assert refused.value.code == "pgp-key-secret"


def test_two_keys_in_one_block_are_refused(pgp_keys: PgpKeys):
    with pytest.raises(SigningError) as refused:
        signing.key_inspect(pgp_keys.two_keys_armored)

    assert refused.value.code == "pgp-key-count"


def test_trusting_a_key_is_idempotent(pgp_keys: PgpKeys):
    first = signing.key_trust(pgp_keys.endorser.armored)
    second = signing.key_trust(pgp_keys.endorser.armored)

    assert first == second
    assert trusted_fingerprints() == {pgp_keys.endorser.fingerprint}
    assert signing.key_lookup(pgp_keys.endorser.fingerprint) == first


def test_trusted_keyring_is_private(creator_key):
    assert (settings.MARKETPLACE_GNUPG_HOME.stat().st_mode & 0o777) == 0o700


# ------------------------------------------------------------------------------------------------- signing


def test_signing_fills_the_endorsement_from_the_key(creator_key):
    signed = creator_key.sign(entry_document(), now=NOW)

    entry = metadata.parse(signed)
    assert entry.endorsement == metadata.Endorsement(
        email="creator@example.org", subject=CREATOR_UID, issuer=f"OpenPGP:{creator_key.fingerprint}", created=NOW
    )
    assert entry.signature_kind == "openpgp"


def test_signing_with_another_user_id_of_the_key(creator_key):
    signed = creator_key.sign(entry_document(), email="Casey.C@lab.example.net")

    entry = metadata.parse(signed)
    assert (entry.endorsement.email, entry.endorsement.subject) == ("casey.c@lab.example.net", CREATOR_SECOND_UID)
    assert verify(signed).verified


def test_signing_as_an_email_not_on_the_key_is_refused(creator_key):
    with pytest.raises(SigningError) as refused:
        creator_key.sign(entry_document(), email="someone@example.org")

    assert refused.value.code == "email-not-on-key"


def test_signing_an_invalid_entry_is_refused(creator_key):
    with pytest.raises(MetadataInvalid) as refused:
        creator_key.sign(entry_document(kind="vm"))

    assert refused.value.code == "kind"


def test_signing_an_already_signed_entry_is_refused(creator_key):
    with pytest.raises(MetadataInvalid) as refused:
        creator_key.sign(creator_key.sign(entry_document()))

    assert refused.value.code == "already-signed"


def test_signing_with_a_key_not_in_the_keyring_is_refused(creator_key, tmp_path):
    empty = tmp_path / "g"
    empty.mkdir(mode=0o700)

    with pytest.raises(SigningError) as refused:
        signing.sign(entry_document(), gnupghome=empty, fingerprint=creator_key.fingerprint)

    assert refused.value.code == "pgp-key-missing"


def test_signing_with_a_passphrase_protected_key(tmp_path_factory):
    home = tmp_path_factory.mktemp("pass")
    home.chmod(0o700)
    subprocess.run(
        [*gpg_argv(home)[:-2], "--passphrase", "correct horse", "--quick-gen-key", "Pat <pat@example.org>",
         "ed25519", "sign", "never"],
        check=True, capture_output=True,
    )  # fmt: skip
    fingerprint = next(
        line.split(":")[9]
        for line in subprocess.run([*gpg_argv(home), "--with-colons", "-K"], capture_output=True, check=True)
        .stdout.decode()
        .splitlines()
        if line.startswith("fpr:")
    )
    try:
        # The wrong passphrase first: the agent caches a good one.
        with pytest.raises(SigningError) as refused:
            signing.sign(entry_document(), gnupghome=home, fingerprint=fingerprint, passphrase="wrong")
        assert refused.value.code == "pgp-passphrase"

        signed = signing.sign(entry_document(), gnupghome=home, fingerprint=fingerprint, passphrase="correct horse")
        armored = subprocess.run([*gpg_argv(home), "--armor", "--export", fingerprint], capture_output=True)
        signing.key_trust(armored.stdout.decode())
        assert verify(signed).verified
    finally:
        signing.shutdown_agent(home)


def test_unknown_namespace_elements_survive_signing(creator_key):
    document = entry_document().replace(
        b"</rdf:Description>", b'  <ex:note xmlns:ex="http://example.org/ns#">kept</ex:note>\n  </rdf:Description>'
    )

    signed = creator_key.sign(document)

    assert b'<ex:note xmlns:ex="http://example.org/ns#">kept</ex:note>' in signed
    assert verify(signed).verified


# ------------------------------------------------------------------------------------------------- verification


def test_a_good_signature_names_its_key(creator_key):
    signed = creator_key.sign(entry_document())

    check = verify(signed)

    assert check == signing.SignatureCheck(
        kind="openpgp",
        verified=True,
        fingerprint=creator_key.fingerprint,
        check=None,
        message=f"Signed by {CREATOR_UID} with the key {creator_key.fingerprint}.",
    )


def test_removing_the_signature_restores_exactly_the_signed_bytes(creator_key, tmp_path):
    signed = creator_key.sign(entry_document())
    element = signature_of(signed)
    armored = element[element.index(b"-----BEGIN") : element.index(b"</sig:Signature>")]

    unsigned = signed.replace(element + b"\n", b"", 1)

    assert element not in unsigned
    assert metadata.signed_bytes(unsigned) == metadata.signed_bytes(signed)
    # The bytes gpg itself accepts for this signature are exactly those.
    (tmp_path / "entry.sig").write_bytes(armored)
    (tmp_path / "entry.c14n").write_bytes(metadata.signed_bytes(unsigned))
    gpg = subprocess.run(
        ["gpg", "--homedir", str(settings.MARKETPLACE_GNUPG_HOME), "--batch", "--status-fd", "1", "--verify",
         str(tmp_path / "entry.sig"), str(tmp_path / "entry.c14n")],
        capture_output=True,
    )  # fmt: skip
    assert b"[GNUPG:] GOODSIG" in gpg.stdout
    (tmp_path / "entry.c14n").write_bytes(unsigned)
    gpg = subprocess.run(
        ["gpg", "--homedir", str(settings.MARKETPLACE_GNUPG_HOME), "--batch", "--status-fd", "1", "--verify",
         str(tmp_path / "entry.sig"), str(tmp_path / "entry.c14n")],
        capture_output=True,
    )  # fmt: skip
    assert b"[GNUPG:] BADSIG" in gpg.stdout  # the serialised document is not what is signed: its C14N is


def test_an_unsigned_entry_is_reported_unsigned(creator_key):
    document = metadata.endorse(
        entry_document(), email=creator_key.email, subject=creator_key.uid,
        issuer=f"OpenPGP:{creator_key.fingerprint}", created=NOW,
    )  # fmt: skip

    check = verify(document)

    assert (check.kind, check.verified, check.check, check.fingerprint) == ("none", False, "unsigned", None)
    assert "not signed" in check.message


@pytest.mark.parametrize(
    ("old", "new"),
    [(b"<dcterms:title>Ubuntu", b"<dcterms:title>Ubuntv"), (b"<slterms:os>Ubuntu<", b"<slterms:os>Ubuntv<")],
    ids=["title", "os"],
)
def test_one_byte_changed_after_signing_is_a_bad_signature(creator_key, old, new):
    signed = creator_key.sign(entry_document())
    tampered = signed.replace(old, new, 1)
    assert len(tampered) == len(signed) and tampered != signed

    check = verify(tampered)

    assert (check.verified, check.check) == (False, "bad-signature")
    assert "changed after it was signed" in check.message


def test_a_signature_from_a_key_not_in_the_trusted_keyring_is_an_unknown_key(untrusted_key, creator_key):
    signed = untrusted_key.sign(entry_document())

    check = verify(signed)

    assert (check.verified, check.check) == (False, "unknown-key")
    assert "not known" in check.message


def test_verification_never_imports_a_key_carried_by_the_signature(untrusted_key, creator_key):
    signed = untrusted_key.sign_endorsed(entry_document(), extra=["--include-key-block"])
    before = trusted_fingerprints()

    check = verify(signed)

    assert check.check == "unknown-key"
    assert trusted_fingerprints() == before
    assert untrusted_key.fingerprint not in trusted_fingerprints()


def test_verification_never_imports_a_key_pasted_into_the_document(untrusted_key, creator_key):
    document = entry_document().replace(
        b"</rdf:Description>",
        b'<ex:key xmlns:ex="http://example.org/ns#">' + untrusted_key.armored.encode() + b"</ex:key></rdf:Description>",
    )
    signed = untrusted_key.sign(document)

    assert verify(signed).check == "unknown-key"
    assert untrusted_key.fingerprint not in trusted_fingerprints()


def test_an_email_not_on_the_key_is_refused(creator_key):
    signed = creator_key.sign_endorsed(entry_document(), email="someone.else@example.org")

    check = verify(signed)

    assert (check.verified, check.check, check.fingerprint) == (False, "email-not-on-key", creator_key.fingerprint)
    assert "someone.else@example.org" in check.message


def test_an_issuer_naming_another_key_is_refused(creator_key, endorser_key):
    signed = creator_key.sign_endorsed(entry_document(), issuer=f"OpenPGP:{endorser_key.fingerprint}")

    check = verify(signed)

    assert (check.verified, check.check) == (False, "issuer-mismatch")
    assert endorser_key.fingerprint in check.message and creator_key.fingerprint in check.message


def test_an_issuer_that_is_not_a_fingerprint_is_refused(creator_key):
    signed = creator_key.sign_endorsed(entry_document(), issuer="CN=Casey Creator,O=Example")

    assert verify(signed).check == "issuer-mismatch"


def test_a_signature_copied_from_another_entry_is_refused(creator_key):
    first = creator_key.sign(entry_document(), now=NOW)
    second_unsigned = entry_document()
    second = creator_key.sign(second_unsigned, now=NOW)
    copied = second.replace(signature_of(second), signature_of(first))

    check = verify(copied)

    assert (check.verified, check.check) == (False, "signature-copied")
    assert metadata.parse(first).identifier in check.message


def test_a_signature_replayed_onto_a_newer_entry_of_the_same_image_is_refused(creator_key):
    sha1 = "ab" * 20
    old = creator_key.sign(entry_document(sha1=sha1), now=NOW - dt.timedelta(days=2))
    new = creator_key.sign(entry_document(sha1=sha1, deprecated="kernel CVE"), now=NOW)

    check = verify(new.replace(signature_of(new), signature_of(old)))

    assert check.check == "signature-copied"


def test_a_signature_copied_without_our_notation_is_a_bad_signature(creator_key):
    first = creator_key.sign_endorsed(entry_document(), created=NOW)
    second = creator_key.sign_endorsed(entry_document(), created=NOW)

    check = verify(second.replace(signature_of(second), signature_of(first)))

    assert check.check == "bad-signature"


def test_a_key_expired_at_created_is_refused(pgp_keys: PgpKeys):
    # The key was valid 2020-01-01 .. 2020-12-31; the entry claims 2021-06-01 (signed while the key was valid).
    key = pgp_keys.expiring
    signing.key_trust(key.armored)
    at = dt.datetime(2021, 6, 1, tzinfo=dt.UTC)
    signed = key.sign_endorsed(entry_document(), created=at, at=at - dt.timedelta(days=200))

    check = verify(signed)

    assert (check.verified, check.check) == (False, "key-expired")
    assert "2020-12-31" in check.message


def test_a_key_that_expired_after_the_entry_was_signed_no_longer_verifies(pgp_keys: PgpKeys):
    # gpg itself says EXPKEYSIG: the key expired (2020-12-31) before now, whatever the entry's dates.
    key = pgp_keys.expiring
    signing.key_trust(key.armored)
    at = dt.datetime(2020, 6, 1, tzinfo=dt.UTC)
    signed = key.sign_endorsed(entry_document(), created=at, at=at)

    check = verify(signed)

    assert (check.verified, check.check, check.fingerprint) == (False, "key-expired", key.fingerprint)
    assert "2020-12-31" in check.message and "no longer endorse" in check.message


def test_the_same_entry_verified_while_its_key_was_valid(pgp_keys: PgpKeys):
    # Verification happens at a moment: with gpg's key expiry still ahead of the clock, only ours decides.
    key = pgp_keys.expiring
    signing.key_trust(key.armored)
    at = dt.datetime(2020, 6, 1, tzinfo=dt.UTC)
    signed = key.sign_endorsed(entry_document(), created=at, at=at)

    assert verify(signed).check == "key-expired"  # gpg's clock is today's: EXPKEYSIG
    check = signing.verify(signed, metadata.parse(signed), now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    assert check.check == "key-expired"


def test_a_key_expiring_later_is_refused_once_the_clock_passes_its_expiry(tmp_path_factory):
    home = tmp_path_factory.mktemp("soon")
    home.chmod(0o700)
    try:
        born = NOW - dt.timedelta(hours=1)
        key = generate_key(home, "Sue Soon <sue@example.org>", born=born, expire="1d")
        expires = signing.key_trust(key.armored).expires
        assert expires is not None
        signed = key.sign_endorsed(entry_document(), created=born + dt.timedelta(minutes=1), at=born)
        parsed = metadata.parse(signed)

        assert signing.verify(signed, parsed, now=expires - dt.timedelta(minutes=1)).verified
        check = signing.verify(signed, parsed, now=expires)
        assert (check.verified, check.check) == (False, "key-expired")
    finally:
        signing.shutdown_agent(home)


def test_an_expired_signature_is_refused_expsig(creator_key):
    at = NOW - dt.timedelta(days=3)
    signed = creator_key.sign_endorsed(entry_document(), created=at, at=at, extra=["--default-sig-expire", "1d"])

    check = verify(signed)

    assert (check.verified, check.check) == (False, "signature-expired")
    assert "expired at" in check.message


def test_a_signature_expiring_later_verifies_until_it_expires(creator_key):
    at = NOW - dt.timedelta(hours=1)
    signed = creator_key.sign_endorsed(entry_document(), created=at, at=at, extra=["--default-sig-expire", "1d"])
    parsed = metadata.parse(signed)

    assert signing.verify(signed, parsed).verified
    assert signing.verify(signed, parsed, now=at + dt.timedelta(days=2)).check == "signature-expired"


def test_non_ascii_inside_the_armor_is_malformed_not_a_crash(creator_key):
    signed = creator_key.sign(entry_document())
    tampered = signed.replace(b"-----END PGP SIGNATURE-----", "\u00e9\n-----END PGP SIGNATURE-----".encode())

    check = verify(tampered)

    assert (check.verified, check.check) == (False, "signature-malformed")


def test_a_signature_made_after_the_key_expired_is_refused_whatever_created_says(tmp_path_factory):
    # gpg will not sign with an expired key, so: sign in mid-2021 with a key that had no expiry, then give
    # the key an expiry (2021-03-01) by a self-signature dated 2021-01-01. The entry backdates created to 2020.
    home = tmp_path_factory.mktemp("shortened")
    home.chmod(0o700)
    try:
        key = generate_key(home, "Sid Shortened <sid@example.org>")
        signed = key.sign_endorsed(
            entry_document(), created=dt.datetime(2020, 6, 1, tzinfo=dt.UTC), at=dt.datetime(2021, 6, 1, tzinfo=dt.UTC)
        )
        subprocess.run(
            [*gpg_argv(home, at=dt.datetime(2021, 1, 1, tzinfo=dt.UTC)), "--quick-set-expire", key.fingerprint,
             "2021-03-01"],
            check=True, capture_output=True,
        )  # fmt: skip
        armored = subprocess.run([*gpg_argv(home), "--armor", "--export", key.fingerprint], capture_output=True)
        assert signing.key_trust(armored.stdout.decode()).expires is not None

        check = verify(signed)

        assert (check.verified, check.check) == (False, "key-expired")
    finally:
        signing.shutdown_agent(home)


def test_an_entry_dated_before_its_key_existed_is_refused(creator_key):
    signed = creator_key.sign_endorsed(entry_document(), created=dt.datetime(2019, 1, 1, tzinfo=dt.UTC))

    assert verify(signed).check == "key-not-yet-valid"


def test_a_signature_element_without_an_openpgp_signature_is_malformed(creator_key):
    signed = creator_key.sign(entry_document())
    broken = signed.replace(signature_of(signed), b'<sig:Signature xmlns:sig="http://altostratus.dev/ns/pgp#">hello'
                                                   b"</sig:Signature>")  # fmt: skip

    assert verify(broken).check == "signature-malformed"


def test_corrupt_armor_is_malformed(creator_key):
    signed = creator_key.sign(entry_document())
    element = signature_of(signed)
    lines = element.split(b"\n")
    lines[3] = b"A" * len(lines[3])
    corrupt = signed.replace(element, b"\n".join(lines))

    assert verify(corrupt).check in {"signature-malformed", "bad-signature"}
    assert not verify(corrupt).verified


def test_an_empty_xmldsig_signature_is_malformed(creator_key):
    document = metadata.endorse(
        entry_document(), email=creator_key.email, subject="CN=Casey", issuer="CN=Example CA", created=NOW
    ).replace(b"</rdf:RDF>", b'<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/>\n</rdf:RDF>')

    check = verify(document)

    assert (check.kind, check.verified, check.check) == ("xmldsig", False, "signature-malformed")


def test_verifiers_are_chosen_by_signature_element():
    assert set(signing.VERIFIERS) == set(metadata.SIGNATURE_ELEMENTS)


def test_verification_is_quick(creator_key):
    signed = creator_key.sign(entry_document())
    entry = metadata.parse(signed)
    started = dt.datetime.now(dt.UTC)

    for _ in range(10):
        assert signing.verify(signed, entry).verified

    assert (dt.datetime.now(dt.UTC) - started) < dt.timedelta(seconds=5)


def test_a_key_generated_now_signs_entries_dated_now(tmp_path_factory):
    home = tmp_path_factory.mktemp("fresh")
    home.chmod(0o700)
    try:
        key = generate_key(home, "Fresh <fresh@example.org>", born=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
        signing.key_trust(key.armored)
        assert verify(key.sign(entry_document())).verified
    finally:
        signing.shutdown_agent(home)


def test_gnupghome_is_created_private(settings, tmp_path):
    settings.MARKETPLACE_GNUPG_HOME = tmp_path / "new-home"

    home = signing.trusted_home()

    assert home.is_dir() and (os.stat(home).st_mode & 0o777) == 0o700
