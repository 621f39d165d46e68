"""The policy against the Marketplace's data: real signed entries, revocation and expiry over time, the
site key, and the audit trail of audit mode."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from core.models import AuditEntry
from marketplace import policy, selectors, services, signing
from marketplace.models import Image
from marketplace.policy import PolicyRules
from marketplace.policy.services import policy_change
from tests.factories import UserFactory
from tests.marketplace.conftest import IMAGE, SITE_EMAIL, T0, unsigned_entry
from tests.marketplace.keys import generate_key

pytestmark = pytest.mark.django_db

CREATOR, SECURITY, MALLORY, BARRY = (
    "creator@example.org",
    "security@example.org",
    "mallory@example.org",
    "barry@example.org",
)


@pytest.fixture(scope="session")
def bystander_key(tmp_path_factory):
    """A fourth endorser, never named by the policies below."""
    home = tmp_path_factory.mktemp("bystander")
    home.chmod(0o700)
    yield generate_key(home, "Barry Bystander <barry@example.org>")
    signing.shutdown_agent(home)


@pytest.fixture
def endorsers(owner, staff, outsider, registered, bystander_key):
    """Every endorser with a registered key: name → (user, sign(at) → signed entry of IMAGE)."""
    barry = UserFactory(username="barry", email=BARRY)
    services.pgp_key_register(actor=barry, armored=bystander_key.armored)
    for user, name in ((owner, "owner"), (staff, "staff"), (outsider, "outsider")):
        registered(user, name)
    return {"owner": owner, "staff": staff, "outsider": outsider, "barry": barry}


def upload(keyring, name, users, *, at=T0, **fields):
    return services.entry_upload(raw=keyring[name].sign(unsigned_entry(IMAGE, **fields), now=at), uploader=users[name])


def set_policy(**rules) -> PolicyRules:
    parsed = PolicyRules.from_json(rules)
    policy_change(actor=None, rules=parsed)
    return parsed


def image() -> Image:
    return Image.objects.get(identifier=IMAGE.identifier)


def line(decision, rule):
    return next(r for r in decision.results if r.rule == rule)


@pytest.mark.parametrize(("present", "allowed"), [(0, False), (1, False), (2, True), (3, True)])
def test_two_of_three_required_endorsers_counts_real_signed_entries(
    endorsers, keyring, bystander_key, present, allowed
):
    keyring = {**keyring, "barry": bystander_key}
    set_policy(required_endorsers={"k": 2, "of": [CREATOR, SECURITY, MALLORY]})
    upload(keyring, "barry", endorsers)  # always someone, so that the image exists
    for name in ("owner", "staff", "outsider")[:present]:
        upload(keyring, name, endorsers)

    decision = policy.evaluate(image())

    assert decision.allowed is allowed
    result = line(decision, "required_endorsers")
    assert result.outcome == ("passed" if allowed else "failed")
    assert result.reason.startswith(f"{present} of the 2 required")
    assert line(decision, "min_endorsements").reason.startswith(f"{present + 1} current endorsement")


def test_revoking_a_key_stops_its_entries_counting_from_the_revocation_time(endorsers, keyring, staff):
    upload(keyring, "owner", endorsers)
    assert policy.evaluate(image()).allowed

    key = services.pgp_key_revoke(actor=staff, fingerprint=keyring["owner"].fingerprint)

    decision = policy.evaluate(image())
    assert not decision.allowed
    assert line(decision, "min_endorsements").reason == (
        "0 current endorsements, 1 required (1 expired, deprecated or revoked not counted)"
    )
    assert decision.summary.startswith("denied (enforce mode): min_endorsements:")
    # Before the revocation the same entry counted: revocation is not retroactive.
    assert policy.evaluate(image(), now=key.revoked_at - dt.timedelta(seconds=1)).allowed


def test_an_endorsement_expiring_turns_the_decision_to_denied(endorsers, keyring):
    with time_machine.travel(T0 + dt.timedelta(hours=1), tick=False):
        upload(keyring, "owner", endorsers, valid=T0 + dt.timedelta(days=10))
    with time_machine.travel(T0 + dt.timedelta(days=9), tick=False):
        assert policy.evaluate(image()).allowed
    with time_machine.travel(T0 + dt.timedelta(days=11), tick=False):
        decision = policy.evaluate(image())
    assert not decision.allowed
    assert "1 expired, deprecated or revoked not counted" in line(decision, "min_endorsements").reason


def test_a_deprecated_latest_entry_does_not_count_but_a_newer_undeprecation_does(endorsers, keyring):
    upload(keyring, "owner", endorsers)
    upload(keyring, "owner", endorsers, at=T0 + dt.timedelta(days=1), deprecated="broken cloud-init")
    assert not policy.evaluate(image()).allowed
    upload(keyring, "owner", endorsers, at=T0 + dt.timedelta(days=2))
    assert policy.evaluate(image()).allowed


def test_the_site_keys_entries_are_the_site_in_endorser_lists(endorsers, keyring, site_key, staff):
    upload(keyring, "owner", endorsers)
    set_policy(endorsers_allow=["site"])
    denied = policy.evaluate(image())
    assert line(denied, "endorsers_allow").outcome == "failed"

    services.image_site_endorse(actor=staff, image=image())

    facts = policy.image_facts(image())
    site = next(f for f in facts.endorsements if f.email == SITE_EMAIL)
    assert site.is_site and site.fingerprint == site_key.fingerprint
    assert not next(f for f in facts.endorsements if f.email == CREATOR).is_site
    decision = policy.evaluate(image())
    assert decision.allowed
    assert decision.trusted_endorsers == (f"{SITE_EMAIL} ({site_key.fingerprint[-16:]})",)


def test_the_default_policy_applies_until_one_is_set(endorsers, keyring):
    upload(keyring, "owner", endorsers)
    assert selectors.policy_active() is None
    assert policy.active_rules() == PolicyRules()
    assert policy.evaluate(image()).allowed
    set_policy(min_endorsements=2)
    assert not policy.evaluate(image()).allowed


def test_locations_come_from_current_endorsements_only(endorsers, keyring):
    upload(keyring, "owner", endorsers, locations=("https://old.example.org/u.qcow2",), deprecated="moved")
    upload(keyring, "staff", endorsers, locations=("https://new.example.org/u.qcow2",))
    decision = policy.evaluate(image(), rules=PolicyRules(require_location=True))
    assert line(decision, "require_location").reason == "downloadable from https://new.example.org/u.qcow2"


def test_locations_of_endorsements_the_site_does_not_trust_do_not_count(endorsers, keyring):
    upload(keyring, "owner", endorsers, locations=())
    upload(keyring, "outsider", endorsers, locations=("https://evil.example/u.qcow2",))
    rules = PolicyRules(require_location=True, endorsers_deny=("mallory@example.org",))
    assert line(policy.evaluate(image(), rules=rules), "require_location").outcome == "failed"


def test_each_endorsements_own_claims_are_judged_and_a_failing_one_does_not_count(endorsers, keyring):
    upload(keyring, "owner", endorsers)
    upload(keyring, "outsider", endorsers, kind="disk", title="DO NOT USE - see http://evil.example")
    set_policy(kinds=["machine"], min_endorsements=1)
    decision = policy.evaluate(image())
    assert decision.allowed
    assert [label.split(" ")[0] for label in decision.trusted_endorsers] == [CREATOR]
    assert line(decision, "kinds").reason.startswith(f"kind machine is allowed ({CREATOR} (")
    assert f"not counted: {MALLORY} (" in line(decision, "kinds").reason
    assert line(decision, "kinds").reason.endswith("claims disk")
    set_policy(kinds=["machine"], min_endorsements=2)
    assert not policy.evaluate(image()).allowed


def test_checksum_rules_look_at_the_images_fixed_checksums(endorsers, keyring):
    upload(keyring, "owner", endorsers)
    upload(keyring, "staff", endorsers, at=T0 + dt.timedelta(hours=1))
    sha256 = IMAGE.checksums["SHA-256"]
    fixed = image()
    assert fixed.sha256 == sha256 and fixed.checksums["SHA-256"] == sha256
    assert not policy.evaluate(fixed, rules=PolicyRules(checksums_deny=(sha256,))).allowed
    assert policy.evaluate(fixed, rules=PolicyRules(checksums_allow=(sha256,))).allowed


def test_audit_mode_logs_failures_on_use_only(endorsers, keyring, owner):
    upload(keyring, "owner", endorsers)
    set_policy(mode="audit", min_endorsements=2)

    shown = policy.evaluate(image())
    assert shown.allowed and shown.verdict == "allowed" and shown.failures
    assert not AuditEntry.objects.filter(action="marketplace.policy.audited").exists()

    policy.evaluate(image(), on_use=True, actor=owner)
    entry = AuditEntry.objects.get(action="marketplace.policy.audited")
    assert entry.actor == owner and entry.object_repr == IMAGE.identifier
    assert [f["rule"] for f in entry.details["failed"]] == ["min_endorsements"]


def test_use_in_enforce_or_warn_mode_writes_no_audit_entry(endorsers, keyring, owner):
    upload(keyring, "owner", endorsers)
    for mode in ("enforce", "warn"):
        set_policy(mode=mode, min_endorsements=2)
        policy.evaluate(image(), on_use=True, actor=owner)
    assert not AuditEntry.objects.filter(action="marketplace.policy.audited").exists()


def test_evaluating_a_prefetched_image_needs_no_query_per_endorser(endorsers, keyring, django_assert_num_queries):
    for name in ("owner", "staff", "outsider"):
        upload(keyring, name, endorsers)
    fetched = selectors.image_get(identifier=IMAGE.identifier)
    rules = policy.active_rules()
    with django_assert_num_queries(1):  # the site key fingerprints
        policy.evaluate(fetched, rules=rules)
