"""A creator with ``alto`` only: register the key, build → sign (real gpg) → validate → upload → search →
deprecate → status, over real HTTP; and the local validator refuses what the server refuses, by the same rule."""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path

import pytest

from marketplace.models import Entry
from tests.factories import TEST_PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def image_file(tmp_path):
    """A small gzip-compressed image: alto describes what is inside."""
    path = tmp_path / "rocky-9.img.gz"
    path.write_bytes(gzip.compress(os.urandom(200_000)))
    return path


def build_and_sign(alto, pgp_keys, image_file, tmp_path, **extra: str) -> tuple[str, str]:
    entry = tmp_path / "rocky.xml"
    built = alto(
        "image",
        "build-metadata",
        str(image_file),
        "--os",
        "Rocky",
        "--os-version",
        "9",
        "--arch",
        "x86_64",
        "--format",
        "raw",
        "--location",
        "https://images.example.org/rocky-9.img.gz",
        "--title",
        "Rocky Linux 9",
        "-o",
        str(entry),
        "--json",
        *[v for pair in extra.items() for v in pair],
    )
    assert built.exit_code == 0, built.stderr
    signed = alto("image", "sign", str(entry), "--key", pgp_keys.creator.fingerprint, "--json")
    assert signed.exit_code == 0, signed.stderr
    assert signed.json()["endorser"] == pgp_keys.creator.email
    assert signed.json()["issuer"] == f"OpenPGP:{pgp_keys.creator.fingerprint}"
    return built.json()["identifier"], str(entry)


def test_a_creator_publishes_finds_and_deprecates_an_image_with_alto(
    alto, owner, token_of, pgp_keys, image_file, tmp_path
):
    token = token_of(owner)
    added = alto("keys", "pgp", "add", "--key", pgp_keys.creator.fingerprint, "--json", token=token)
    assert added.exit_code == 0, added.stderr
    assert added.json()["fingerprint"] == pgp_keys.creator.fingerprint

    identifier, entry = build_and_sign(alto, pgp_keys, image_file, tmp_path)
    local = alto("image", "validate", entry, "--json")
    assert local.exit_code == 0, local.stderr
    assert local.json()["valid"] is True
    remote = alto("image", "validate", "--remote", entry, "--json")
    assert remote.exit_code == 0, remote.stderr
    assert remote.json()["signature"]["verified"] is True
    assert remote.json()["identifier"] == identifier

    uploaded = alto("image", "upload", entry, "--json", token=token)
    assert uploaded.exit_code == 0, uploaded.stderr
    assert uploaded.json()["status"] == "valid"

    found = alto("image", "search", "--os", "Rocky", "--arch", "x86_64", "--json")
    assert [image["identifier"] for image in found.json()] == [identifier]
    table = alto("image", "search", "--os", "Rocky")
    assert identifier in table.stdout and "Rocky Linux 9" in table.stdout

    deprecated = alto(
        "image",
        "deprecate",
        identifier,
        "--reason",
        "OpenSSH CVE; use 9.4",
        "--key",
        pgp_keys.creator.fingerprint,
        "--json",
        token=token,
    )
    assert deprecated.exit_code == 0, deprecated.stderr
    assert deprecated.json()["status"] == "deprecated"

    shown = alto("image", "show", identifier, "--json").json()
    assert [(e["endorser"], e["status"], e["deprecated_reason"]) for e in shown["endorsements"]] == [
        (pgp_keys.creator.email, "deprecated", "OpenSSH CVE; use 9.4")
    ]
    assert alto("image", "search", "--os", "Rocky", "--json").json() == []
    assert [i["identifier"] for i in alto("image", "search", "--status", "deprecated", "--json").json()] == [identifier]
    assert Entry.objects.filter(image__identifier=identifier).count() == 2
    decision = alto("image", "policy", identifier, "--json")
    assert decision.json()["allowed"] is False

    undone = alto(
        "image", "deprecate", identifier, "--undo", "--key", pgp_keys.creator.fingerprint, "--json", token=token
    )
    assert undone.exit_code == 0, undone.stderr
    assert undone.json()["status"] == "valid"
    assert alto("image", "policy", identifier, "--json").json()["allowed"] is True


# Documents the server refuses, each breaking one rule of the format (DESIGN.md §2.1, §2.2).
BROKEN = {
    "identifier-mismatch": lambda xml: _swap_sha1(xml),
    "date-format": lambda xml: xml.replace(b"Z</dcterms:created>", b"</dcterms:created>", 1),
    "outside-root": lambda xml: xml.replace(b"<rdf:RDF", b"<!-- not signed --><rdf:RDF", 1),
    "dtd-forbidden": lambda xml: xml.replace(b"<rdf:RDF", b"<!DOCTYPE rdf:RDF [ ]><rdf:RDF", 1),
    "kind": lambda xml: xml.replace(b"<slterms:kind>machine<", b"<slterms:kind>container<", 1),
}


def _swap_sha1(xml: bytes) -> bytes:
    start = xml.index(b"<slreq:value>", xml.index(b"SHA-1")) + len(b"<slreq:value>")
    return xml[:start] + b"f" * 40 + xml[start + 40 :]


@pytest.mark.parametrize("rule", sorted(BROKEN))
def test_an_entry_the_server_refuses_is_refused_by_alto_validate_with_the_same_rule(
    alto, owner, token_of, pgp_keys, image_file, tmp_path, rule
):
    token = token_of(owner)
    assert alto("keys", "pgp", "add", "--key", pgp_keys.creator.fingerprint, token=token).exit_code == 0
    _identifier, entry = build_and_sign(alto, pgp_keys, image_file, tmp_path)
    broken = tmp_path / "broken.xml"
    broken.write_bytes(BROKEN[rule](Path(entry).read_bytes()))

    uploaded = alto("image", "upload", str(broken), token=token)
    assert uploaded.exit_code == 1
    assert f"[{rule}]" in uploaded.stderr
    remote = alto("image", "validate", "--remote", str(broken), "--json")
    local = alto("image", "validate", str(broken), "--json")
    assert remote.exit_code == local.exit_code == 1
    assert local.json()["errors"] == remote.json()["errors"]
    assert rule in [error["rule"] for error in local.json()["errors"]]
    assert f"{rule}: " in local.stderr
    assert not Entry.objects.exists()


def test_an_entry_built_and_signed_by_alto_is_accepted_as_the_server_would_sign_it(
    alto, owner, token_of, pgp_keys, image_file, tmp_path
):
    token = token_of(owner)
    alto("keys", "pgp", "add", "--key", pgp_keys.creator.fingerprint, token=token)
    identifier, entry = build_and_sign(alto, pgp_keys, image_file, tmp_path, **{"--valid-days": "30"})
    assert alto("image", "upload", entry, token=token).exit_code == 0
    stored = Entry.objects.get(image__identifier=identifier)
    assert bytes(stored.raw) == Path(entry).read_bytes()  # the signed bytes, unchanged
    assert stored.valid_until is not None


def test_alto_login_stores_a_token_readable_by_its_owner_only_and_uses_it(alto, owner, tmp_path):
    logged_in = alto("login", "--username", "owner", input=f"{TEST_PASSWORD}\n")
    assert logged_in.exit_code == 0, logged_in.stderr
    stored = tmp_path / "alto-config" / "alto" / "credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert TEST_PASSWORD not in stored.read_text()
    quota = alto("quota", "--json")
    assert quota.exit_code == 0, quota.stderr
    assert quota.json()["user"]["username"] == "owner"
    assert alto("logout").exit_code == 0
    assert alto("quota").exit_code == 4


def test_a_wrong_password_is_not_logged_in(alto, owner):
    refused = alto("login", "--username", "owner", input="wrong\n")
    assert refused.exit_code == 4
    assert "Wrong username or password" in refused.stderr
