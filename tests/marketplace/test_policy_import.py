"""StratusLab policy.cfg into the site policy: the command (with and without --dry-run) and the console."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from core.models import AuditEntry
from marketplace import services
from marketplace.models import SitePolicy
from marketplace.policy import PolicyInvalid, PolicyRules, rules_from_policy_cfg
from marketplace.policy.services import policy_change
from tests.marketplace.conftest import IMAGE, OTHER_IMAGE, T0

pytestmark = pytest.mark.django_db

# As StratusLab's policy.cfg wrote it (stratuslab.marketplace.Policy): one value per line, and exactly one
# whitelist and one blacklist key per section, named after it.
POLICY_CFG = f"""\
[endorsers]
whitelistendorsers =
    creator@example.org
    security@example.org

[images]
blacklistimages = {OTHER_IMAGE.identifier}

[checksums]
blacklistchecksums =
"""


@pytest.fixture
def images(owner, registered, entry_for):
    registered(owner, "owner")
    services.entry_upload(raw=entry_for("owner"), uploader=owner)
    services.entry_upload(raw=entry_for("owner", image=OTHER_IMAGE, title="Debian 12", at=T0), uploader=owner)


@pytest.fixture
def cfg_file(tmp_path):
    path = tmp_path / "policy.cfg"
    path.write_text(POLICY_CFG)
    return path


def test_import_policy_dry_run_prints_the_changes_and_changes_nothing(images, cfg_file):
    out = StringIO()
    call_command("import_policy", str(cfg_file), "--dry-run", stdout=out)
    text = out.getvalue()
    assert "Dry run over 2 images: 0 denied now, 1 denied with policy.cfg." in text
    assert re.search(
        rf"Newly denied: 1\n  {OTHER_IMAGE.identifier}  Debian 12: images_deny: .* is on the deny list", text
    )
    assert "Newly allowed: 0" in text and "the policy is unchanged" in text
    assert not SitePolicy.objects.exists()


def test_import_policy_replaces_the_lists_and_keeps_the_other_rules(images, cfg_file, staff):
    policy_change(
        actor=staff,
        rules=PolicyRules.from_json({"mode": "warn", "min_endorsements": 1, "endorsers_deny": ["mallory@example.org"]}),
    )
    out = StringIO()
    call_command("import_policy", str(cfg_file), stdout=out)

    active = SitePolicy.objects.get(is_active=True)
    assert f"Policy #{active.pk} is now active." in out.getvalue()
    rules = active.rules
    assert rules["endorsers_allow"] == ["creator@example.org", "security@example.org"]
    assert rules["endorsers_deny"] == []  # the [endorsers] section's lists replace the old ones
    assert rules["images_deny"] == [OTHER_IMAGE.identifier]
    assert rules["mode"] == "warn" and rules["min_endorsements"] == 1  # kept
    audit = AuditEntry.objects.filter(action="marketplace.policy.changed").latest("id")
    assert audit.details["source"] == "policy.cfg" and audit.details["note"] == "imported from policy.cfg"


def test_import_policy_refuses_an_unknown_section_and_changes_nothing(db, tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text("[users]\nwhitelist = alice\n")
    with pytest.raises(CommandError, match=r"unknown section \[users\]"):
        call_command("import_policy", str(bad), stdout=StringIO())
    assert not SitePolicy.objects.exists()


def test_import_policy_names_a_missing_file(db, tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_policy", str(tmp_path / "nope.cfg"), stdout=StringIO())


def test_console_import_shows_the_dry_run_then_applies_on_confirm(client, staff, images):
    client.force_login(staff)
    upload = SimpleUploadedFile("site-policy.cfg", POLICY_CFG.encode(), content_type="text/plain")
    response = client.post("/marketplace/console/policy/import/", {"policy_cfg": upload})
    assert response.status_code == 200
    preview = response.context["preview"]
    assert [c.identifier for c in preview["result"].newly_denied] == [OTHER_IMAGE.identifier]
    assert b'id="newly-denied"' in response.content and b"Confirm: make this the site policy" in response.content
    assert not SitePolicy.objects.exists()  # nothing until confirmed

    confirmed = client.post(
        "/marketplace/console/policy/confirm/",
        {
            "rules": preview["rules_json"],
            "based_on": preview["based_on"],
            "note": preview["note"],
            "source": "policy.cfg",
        },
        follow=True,
    )
    assert b"is now active" in confirmed.content
    active = SitePolicy.objects.get(is_active=True)
    assert active.rules["images_deny"] == [OTHER_IMAGE.identifier] and active.note == "imported from site-policy.cfg"
    assert active.created_by == staff
    assert AuditEntry.objects.get(action="marketplace.policy.changed").details["source"] == "policy.cfg"
    assert IMAGE.identifier not in active.rules["images_deny"]


def test_console_import_of_a_broken_file_shows_the_error(client, staff, db):
    client.force_login(staff)
    upload = SimpleUploadedFile("policy.cfg", b"[checksums]\nwhitelistchecksums = xyz\n")
    response = client.post("/marketplace/console/policy/import/", {"policy_cfg": upload})
    assert response.status_code == 400
    assert "is not a SHA-1 (40 hex) or SHA-256 (64 hex) checksum" in response.content.decode()
    assert not SitePolicy.objects.exists()


# --- the keys: StratusLab's exact names, nothing that merely starts like them ------------------------------

SHA1 = "a" * 40


def test_every_stratuslab_key_fills_its_list():
    rules = rules_from_policy_cfg(
        f"""\
[endorsers]
whitelistendorsers = creator@example.org
blacklistendorsers = mallory@example.org
[images]
whitelistimages = {IMAGE.identifier}
blacklistimages = {OTHER_IMAGE.identifier}
[checksums]
WhiteListChecksums = {SHA1}
blacklistchecksums = {"b" * 64}
"""
    )

    assert (rules.endorsers_allow, rules.endorsers_deny) == (("creator@example.org",), ("mallory@example.org",))
    assert (rules.images_allow, rules.images_deny) == ((IMAGE.identifier,), (OTHER_IMAGE.identifier,))
    assert (rules.checksums_allow, rules.checksums_deny) == ((SHA1,), ("b" * 64,))


@pytest.mark.parametrize(
    ("section", "key", "accepted"),
    [
        ("images", "whitelistchecksums", "whitelistimages, blacklistimages"),
        ("images", "whitelist", "whitelistimages, blacklistimages"),
        ("endorsers", "whitelist-endorsers", "whitelistendorsers, blacklistendorsers"),
        ("endorsers", "whitelistendorsersx", "whitelistendorsers, blacklistendorsers"),
        ("checksums", "blacklistchecksums-sha1", "whitelistchecksums, blacklistchecksums"),
        ("checksums", "activate", "whitelistchecksums, blacklistchecksums"),
    ],
)
def test_a_key_that_is_not_stratuslabs_is_refused_naming_it_its_section_and_the_accepted_keys(section, key, accepted):
    with pytest.raises(PolicyInvalid) as refused:
        rules_from_policy_cfg(f"[{section}]\n{key} = {SHA1}\n")

    assert refused.value.code == "policy-cfg-invalid"
    assert f"[{section}]" in refused.value.message and repr(key) in refused.value.message
    assert accepted in refused.value.message


def test_keys_in_a_default_section_are_refused_not_spread_over_every_section():
    with pytest.raises(PolicyInvalid, match=r"\[DEFAULT\]") as refused:
        rules_from_policy_cfg(f"[DEFAULT]\nwhitelistimages = {IMAGE.identifier}\n[images]\n")

    assert refused.value.code == "policy-cfg-invalid"


def test_import_policy_refuses_a_prefix_only_key_and_changes_nothing(images, tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text(f"[images]\nwhitelistchecksums = {SHA1}\n")

    with pytest.raises(CommandError, match=r"\[images\] key 'whitelistchecksums'"):
        call_command("import_policy", str(bad), stdout=StringIO())
    assert not SitePolicy.objects.exists()


def test_console_import_of_a_prefix_only_key_shows_the_error_and_changes_nothing(client, staff, db):
    client.force_login(staff)
    upload = SimpleUploadedFile("policy.cfg", f"[images]\nwhitelistchecksums = {SHA1}\n".encode())

    response = client.post("/marketplace/console/policy/import/", {"policy_cfg": upload})

    assert response.status_code == 400
    text = response.content.decode()
    assert "whitelistchecksums" in text and "whitelistimages, blacklistimages" in text
    assert not SitePolicy.objects.exists()
