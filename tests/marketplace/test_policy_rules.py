"""The policy engine alone: each rule on its own, combined, and in each mode."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from marketplace.policy import (
    EndorsementFact,
    ImageFacts,
    PolicyInvalid,
    PolicyRules,
    evaluate_rules,
    rules_from_policy_cfg,
)

# What each endorser claims about the image (the kind, OS, arch and format rules judge each endorsement's own).
CLAIMS = {
    "kind": "machine",
    "os": "Ubuntu",
    "arch": "x86_64",
    "format": "qcow2",
    "locations": ("https://images.example.org/ubuntu.qcow2",),
}
ALICE = EndorsementFact(email="alice@example.org", fingerprint="A" * 40, status="valid", **CLAIMS)
BOB = EndorsementFact(email="bob@example.org", fingerprint="B" * 40, status="valid", **CLAIMS)
CAROL = EndorsementFact(email="carol@example.org", fingerprint="C" * 40, status="valid", **CLAIMS)
SITE_KEY = EndorsementFact(email="security@site.example", fingerprint="D" * 40, status="valid", is_site=True, **CLAIMS)
EVIL = EndorsementFact(
    email="evil@example.org",
    fingerprint="E" * 40,
    status="valid",
    kind="disk",
    os="Windows",
    arch="x86_64",
    format="raw",
    locations=("https://evil.example/x.raw",),
)
SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

IMAGE = ImageFacts(
    identifier="No5o-5ea0sNMlW_75VgGJCv2AcJ",
    sha1=SHA1,
    sha256=SHA256,
    bytes=2_000_000_000,
    endorsements=(ALICE,),
)


def outcome(decision, rule):
    return next(r for r in decision.results if r.rule == rule)


def test_default_policy_allows_an_image_with_one_current_endorsement():
    decision = evaluate_rules(PolicyRules(), IMAGE)
    assert decision.allowed and decision.verdict == "allowed"
    assert outcome(decision, "min_endorsements").outcome == "passed"
    assert outcome(decision, "kinds").outcome == "not_applicable"


def test_every_rule_has_a_line_in_the_decision():
    decision = evaluate_rules(PolicyRules(), IMAGE)
    rules = [r.rule for r in decision.results]
    assert rules == [
        "endorsers_allow", "endorsers_deny", "images_allow", "images_deny", "checksums_allow", "checksums_deny",
        "min_endorsements", "required_endorsers", "kinds", "os", "arch", "formats", "max_bytes", "require_location",
    ]  # fmt: skip
    assert all(r.reason for r in decision.results)


@pytest.mark.parametrize(
    ("rules", "rule", "reason_part"),
    [
        (
            PolicyRules(endorsers_allow=("bob@example.org",)),
            "endorsers_allow",
            "no current endorsement is from an allowed",
        ),
        (PolicyRules(endorsers_deny=("alice@example.org",)), "endorsers_deny", "only denied endorsers endorse it"),
        (PolicyRules(endorsers_deny=("A" * 40,)), "endorsers_deny", "only denied endorsers"),
        (PolicyRules(images_allow=("Other-Identifier-AAAAAAAAAAA",)), "images_allow", "is not on the allow list"),
        (PolicyRules(images_deny=(IMAGE.identifier,)), "images_deny", "is on the deny list"),
        (PolicyRules(checksums_allow=("0" * 40,)), "checksums_allow", "neither its SHA-1 nor its SHA-256"),
        (PolicyRules(checksums_deny=(SHA256,)), "checksums_deny", f"checksum {SHA256} is on the deny list"),
        (PolicyRules(min_endorsements=2), "min_endorsements", "1 current endorsement, 2 required"),
        (PolicyRules(kinds=("disk",)), "kinds", f"kind machine is not one of disk (claimed by {ALICE.label})"),
        (PolicyRules(os=("debian", "centos")), "os", "OS Ubuntu is not one of debian, centos"),
        (PolicyRules(arch=("aarch64",)), "arch", "architecture x86_64 is not one of aarch64"),
        (PolicyRules(formats=("raw",)), "formats", "format qcow2 is not one of raw"),
        (PolicyRules(max_bytes=1_000_000_000), "max_bytes", "2000000000 bytes, at most 1000000000 allowed"),
    ],
)
def test_each_rule_alone_denies_in_enforce_mode_with_its_reason(rules, rule, reason_part):
    decision = evaluate_rules(rules, IMAGE)
    assert not decision.allowed
    assert decision.verdict == "denied"
    line = outcome(decision, rule)
    assert line.outcome == "failed"
    assert reason_part in line.reason
    # Endorser lists and refused claims also leave no trusted endorsement, which the minimum then reports too.
    also = ["min_endorsements"] if rule.startswith("endorsers") or rule in ("kinds", "os", "arch", "formats") else []
    assert sorted(r.rule for r in decision.failures) == sorted([rule, *also])


@pytest.mark.parametrize(
    "rules",
    [
        PolicyRules(endorsers_allow=("alice@example.org",)),
        PolicyRules(endorsers_deny=("bob@example.org",)),
        PolicyRules(images_allow=(IMAGE.identifier,)),
        PolicyRules(images_deny=("Other-Identifier-AAAAAAAAAAA",)),
        PolicyRules(checksums_allow=(SHA1,)),
        PolicyRules(checksums_deny=("0" * 64,)),
        PolicyRules(kinds=("machine",), os=("ubuntu",), arch=("x86_64",), formats=("qcow2", "raw")),
        PolicyRules(max_bytes=2_000_000_000),
        PolicyRules(require_location=True),
    ],
)
def test_each_rule_alone_passes_a_matching_image(rules):
    assert evaluate_rules(rules, IMAGE).allowed


def test_a_sha256_another_image_claimed_first_does_not_pass_the_allow_list_but_is_denied():
    contested = replace(IMAGE, sha256_claimed_first_by="OtherImageClaimedItFirst___")
    allowed = outcome(evaluate_rules(PolicyRules(checksums_allow=(SHA256,)), contested), "checksums_allow")
    assert allowed.outcome == "failed"
    assert "OtherImageClaimedItFirst___ claimed that SHA-256 first" in allowed.reason
    assert outcome(evaluate_rules(PolicyRules(checksums_allow=(SHA1,)), contested), "checksums_allow").outcome == (
        "passed"
    )
    assert outcome(evaluate_rules(PolicyRules(checksums_deny=(SHA256,)), contested), "checksums_deny").outcome == (
        "failed"
    )


def test_require_location_fails_an_image_with_no_location():
    image = replace(IMAGE, endorsements=(replace(ALICE, locations=()),))
    decision = evaluate_rules(PolicyRules(require_location=True), image)
    reason = outcome(decision, "require_location").reason
    assert reason == "no trusted current endorsement gives a location to download it from"
    assert not decision.allowed


def test_an_endorsement_that_declares_no_os_fails_an_os_rule():
    image = replace(IMAGE, endorsements=(replace(ALICE, os=""),))
    decision = evaluate_rules(PolicyRules(os=("ubuntu",)), image)
    assert outcome(decision, "os").reason == f"{ALICE.label} declares no OS; allowed: ubuntu"
    assert not decision.allowed


def test_an_endorsement_whose_claims_fail_a_rule_does_not_count_and_the_line_says_whose():
    image = replace(IMAGE, endorsements=(ALICE, EVIL))
    decision = evaluate_rules(PolicyRules(os=("ubuntu",), min_endorsements=1), image)
    line = outcome(decision, "os")
    assert line.outcome == "passed"
    assert line.reason == f"OS Ubuntu is allowed ({ALICE.label}); not counted: {EVIL.label} claims Windows"
    assert decision.allowed
    assert decision.trusted_endorsers == (ALICE.label,)
    assert "1 not counted: claims outside" in outcome(decision, "min_endorsements").reason
    assert not evaluate_rules(PolicyRules(os=("ubuntu",), min_endorsements=2), image).allowed


def test_a_kind_rule_is_met_by_the_endorsement_that_claims_an_allowed_kind_only():
    decision = evaluate_rules(PolicyRules(kinds=("machine",)), replace(IMAGE, endorsements=(EVIL,)))
    assert outcome(decision, "kinds").outcome == "failed"
    assert not decision.allowed
    assert decision.trusted_endorsers == ()


def test_a_required_endorser_whose_claims_fail_is_missing():
    rules = PolicyRules.from_json(
        {"kinds": ["machine"], "required_endorsers": {"k": 1, "of": ["evil@example.org"]}, "min_endorsements": 1}
    )
    decision = evaluate_rules(rules, replace(IMAGE, endorsements=(ALICE, EVIL)))
    assert outcome(decision, "required_endorsers").outcome == "failed"
    assert "missing: evil@example.org" in outcome(decision, "required_endorsers").reason


def test_require_location_looks_at_trusted_endorsements_only():
    image = replace(IMAGE, endorsements=(replace(ALICE, locations=()), EVIL))
    rules = PolicyRules(require_location=True, endorsers_deny=("evil@example.org",), min_endorsements=0)
    assert outcome(evaluate_rules(rules, image), "require_location").outcome == "failed"
    rules = PolicyRules(require_location=True, kinds=("machine",), min_endorsements=0)
    assert outcome(evaluate_rules(rules, image), "require_location").outcome == "failed"
    assert outcome(evaluate_rules(PolicyRules(require_location=True), image), "require_location").reason == (
        "downloadable from https://evil.example/x.raw"
    )


@pytest.mark.parametrize("status", ["expired", "deprecated"])
def test_expired_and_deprecated_entries_never_count(status):
    image = replace(IMAGE, endorsements=(replace(ALICE, status=status),))
    decision = evaluate_rules(PolicyRules(), image)
    assert not decision.allowed
    assert (
        "0 current endorsements, 1 required (1 expired, deprecated or revoked not counted)"
        in outcome(decision, "min_endorsements").reason
    )


def test_an_entry_signed_by_a_revoked_key_never_counts():
    image = replace(IMAGE, endorsements=(replace(ALICE, revoked=True), BOB))
    decision = evaluate_rules(PolicyRules(endorsers_allow=("alice@example.org",)), image)
    assert not decision.allowed
    assert evaluate_rules(PolicyRules(), image).trusted_endorsers == (BOB.label,)


def test_a_denied_endorser_is_ignored_when_others_endorse_the_image():
    image = replace(IMAGE, endorsements=(ALICE, BOB))
    decision = evaluate_rules(PolicyRules(endorsers_deny=("bob@example.org",), min_endorsements=1), image)
    assert decision.allowed
    assert outcome(decision, "endorsers_deny").reason.startswith("ignored denied endorsers: bob@example.org")
    assert evaluate_rules(PolicyRules(endorsers_deny=("bob@example.org",), min_endorsements=2), image).allowed is False


@pytest.mark.parametrize(
    ("endorsers", "allowed"), [((), False), ((ALICE,), False), ((ALICE, BOB), True), ((ALICE, BOB, CAROL), True)]
)
def test_two_of_three_required_endorsers(endorsers, allowed):
    rules = PolicyRules(
        min_endorsements=0,
        required_endorsers=PolicyRules.from_json(
            {"required_endorsers": {"k": 2, "of": ["alice@example.org", "B" * 40, "carol@example.org"]}}
        ).required_endorsers,
    )
    decision = evaluate_rules(rules, replace(IMAGE, endorsements=endorsers))
    assert decision.allowed is allowed
    assert f"{len(endorsers)} of the 2 required" in outcome(decision, "required_endorsers").reason


def test_k_of_n_counts_only_current_endorsements():
    rules = PolicyRules.from_json({"required_endorsers": {"k": 2, "of": ["alice@example.org", "bob@example.org"]}})
    image = replace(IMAGE, endorsements=(ALICE, replace(BOB, status="deprecated")))
    decision = evaluate_rules(rules, image)
    assert not decision.allowed
    assert "missing: bob@example.org" in outcome(decision, "required_endorsers").reason


def test_site_stands_for_the_site_key_in_endorser_lists():
    rules = PolicyRules.from_json({"endorsers_allow": ["site"]})
    assert not evaluate_rules(rules, IMAGE).allowed
    assert evaluate_rules(rules, replace(IMAGE, endorsements=(ALICE, SITE_KEY))).allowed


def test_combined_rules_report_every_failure():
    rules = PolicyRules(images_deny=(IMAGE.identifier,), os=("debian",), max_bytes=10)
    decision = evaluate_rules(rules, IMAGE)
    assert [r.rule for r in decision.failures] == ["images_deny", "min_endorsements", "os", "max_bytes"]
    assert decision.summary.startswith("denied (enforce mode): images_deny: ")


def test_warn_mode_allows_and_reports_the_failures_as_warnings():
    decision = evaluate_rules(PolicyRules(mode="warn", os=("debian",)), IMAGE)
    assert decision.allowed
    assert decision.verdict == "allowed-with-warnings"
    assert [r.rule for r in decision.failures] == ["min_endorsements", "os"]


def test_audit_mode_allows_and_keeps_the_failures_for_the_log_only():
    decision = evaluate_rules(PolicyRules(mode="audit", os=("debian",)), IMAGE)
    assert decision.allowed
    assert decision.verdict == "allowed"
    assert [r.rule for r in decision.failures] == ["min_endorsements", "os"]


def test_policy_json_round_trips_with_the_design_names():
    data = {
        "mode": "warn",
        "endorsers_allow": ["site", "Alice@Example.org", "OpenPGP:" + "ab" * 20],
        "endorsers_deny": [],
        "images_allow": [],
        "images_deny": [IMAGE.identifier],
        "checksums_allow": [],
        "checksums_deny": [SHA1.upper()],
        "min_endorsements": 2,
        "required_endorsers": {"k": 1, "of": ["site"]},
        "kinds": ["machine"],
        "os": ["Ubuntu"],
        "arch": [],
        "formats": [],
        "max_bytes": None,
        "require_location": True,
    }
    rules = PolicyRules.from_json(data)
    assert rules.endorsers_allow == ("site", "alice@example.org", "AB" * 20)
    assert rules.checksums_deny == (SHA1,)
    assert PolicyRules.from_json(rules.to_json()) == rules
    assert set(rules.to_json()) == set(data)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"mode": "strict"}, "mode", "mode must be one of enforce, warn, audit"),
        ({"min_endorsements": -1}, "min_endorsements", "whole number"),
        ({"endorsers_allow": ["not an endorser"]}, "endorsers_allow", "neither a 40-hex key fingerprint"),
        ({"checksums_deny": ["xyz"]}, "checksums_deny", "is not a SHA-1"),
        ({"required_endorsers": {"k": 3, "of": ["site"]}}, "required_endorsers", "between 1 and 1"),
        ({"max_bytes": "big"}, "max_bytes", "max_bytes must be null"),
        ({"os": "ubuntu"}, "os", "os must be a list of strings"),
        ({"colour": "blue"}, "colour", "unknown policy field"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(data, field, message):
    with pytest.raises(PolicyInvalid) as caught:
        PolicyRules.from_json(data)
    assert message in caught.value.extra["errors"][field]
    assert caught.value.code == "policy-invalid"


STRATUSLAB_CFG = """\
[endorsers]
whitelistendorsers=
 airaj@lal.in2p3.fr
 loomis@lal.in2p3.fr

blacklistendorsers=
 hackers@example.org

[images]
whitelistimages=
 GOaxJFdoEXvqAm9ArJgnZ0_ky6F
 MMZu9WvwKIro-rtBQfDk4PsKO7_

blacklistimages=
 GOaxJFdoEXvqAm9ArJgnZ0_GGG

[checksums]
whitelistchecksums=

blacklistchecksums=
 639ac4915da045efa809bd02b2609d9d3f932e85
"""


def test_stratuslab_policy_cfg_is_read_with_its_own_key_names():
    rules = rules_from_policy_cfg(STRATUSLAB_CFG, base=PolicyRules(mode="warn", os=("ubuntu",)))
    assert rules.endorsers_allow == ("airaj@lal.in2p3.fr", "loomis@lal.in2p3.fr")
    assert rules.endorsers_deny == ("hackers@example.org",)
    assert rules.images_allow == ("GOaxJFdoEXvqAm9ArJgnZ0_ky6F", "MMZu9WvwKIro-rtBQfDk4PsKO7_")
    assert rules.images_deny == ("GOaxJFdoEXvqAm9ArJgnZ0_GGG",)
    assert rules.checksums_allow == ()
    assert rules.checksums_deny == ("639ac4915da045efa809bd02b2609d9d3f932e85",)
    assert rules.mode == "warn" and rules.os == ("ubuntu",)  # the rest of the base is kept


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not an ini file", "not a valid INI file"),
        ("[servers]\nwhitelistservers=x\n", "unknown section [servers]"),
        ("[images]\ngreylistimages=x\n", "neither whitelist… nor blacklist…"),
        ("[checksums]\nblacklistchecksums=\n nothex\n", "is not a SHA-1"),
    ],
)
def test_a_broken_policy_cfg_is_refused_with_the_reason(text, message):
    with pytest.raises(PolicyInvalid, match=re.escape(message)):
        rules_from_policy_cfg(text)
