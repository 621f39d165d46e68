"""One set of entry-format rules: the server's ``marketplace.metadata`` is the ``alto_metadata`` package the client
installs, with the site's settings; the package stands alone (no Django, no gpg)."""

from __future__ import annotations

import os
import subprocess
import sys

import alto_metadata
import pytest

from marketplace import metadata

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_server_applies_the_shared_packages_rules_and_types():
    assert metadata.Problem is alto_metadata.Problem
    assert metadata.Metadata is alto_metadata.Metadata
    assert metadata.build is alto_metadata.build
    assert issubclass(metadata.MetadataInvalid, alto_metadata.MetadataInvalid)
    assert metadata.NOTATION == alto_metadata.NOTATION


def test_the_shared_package_imports_and_checks_without_django_or_gpg(tmp_path):
    script = (
        "import sys, alto_metadata as md\n"
        "doc = md.build(image_bytes=0, checksums={'SHA-1': 'da39a3ee5e6b4b0d3255bfef95601890afd80709'}, type='base')\n"
        "entry, problems = md.check(doc)\n"
        "print(md.identifier_from_sha1('da39a3ee5e6b4b0d3255bfef95601890afd80709'), [p.rule for p in problems])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'gnupg', 'httpx', 'click')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["No5o-5ea0sNMlW_75VgGJCv2AcJ ['email-format']", "[]"]


@pytest.mark.parametrize(
    ("email", "valid"),
    [
        ("creator@example.org", True),
        ("Jane.Tester@lab.example.net", True),
        ("altostratus@localhost", True),  # the site key's address under the default DEFAULT_FROM_EMAIL
        ("o'brien+images@example.org", True),
        ("x@exämple.org", True),
        ("ops@[192.0.2.1]", True),
        ("jane at example", False),
        ("", False),
        ("a@b", False),
        ("a..b@example.org", False),
        ("a@-example.org", False),
        ("a@example.1", False),
        ("<a@example.org>", False),
        ("a@example.org\n", False),
    ],
)
def test_endorser_e_mails_follow_one_rule_on_both_sides(email, valid):
    assert alto_metadata.is_email_address(email) is valid


def test_redeclaring_an_entry_changes_only_its_signature_and_deprecation():
    sha1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
    original = alto_metadata.build(
        image_bytes=0, checksums={"SHA-1": sha1}, type="base", endorser_email="c@example.org", alternative="tag-7"
    )
    signed = alto_metadata.attach_signature(original, "-----BEGIN PGP SIGNATURE-----\nx\n-----END PGP SIGNATURE-----")
    deprecated = alto_metadata.redeclared(signed, deprecated="broken")
    entry = alto_metadata.parse(deprecated)
    assert (entry.deprecated, entry.alternative, entry.signature_kind) == ("broken", "tag-7", "none")
    again = alto_metadata.parse(alto_metadata.redeclared(deprecated, deprecated="still broken"))
    assert again.deprecated == "still broken"
    restored = alto_metadata.redeclared(deprecated, deprecated=None)
    assert alto_metadata.parse(restored).deprecated is None
    assert alto_metadata.signed_bytes(restored) == alto_metadata.signed_bytes(original)
