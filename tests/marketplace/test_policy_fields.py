"""The policy's rule fields are declared once: the API serializer and the console form follow the declaration."""

from __future__ import annotations

import dataclasses

from marketplace.policy import PolicyRules
from marketplace.policy.fields import RULE_FIELDS
from marketplace.policy.forms import PolicyForm
from marketplace.policy.serializers import PolicyRulesSerializer


def test_every_policy_rule_is_declared_once_with_a_label_and_help():
    names = [rule.name for rule in RULE_FIELDS]
    assert names == [field.name for field in dataclasses.fields(PolicyRules)]
    assert all(rule.label and rule.help for rule in RULE_FIELDS)


def test_the_api_serializer_has_exactly_the_declared_rules_with_their_help():
    fields = PolicyRulesSerializer().fields
    assert list(fields) == [rule.name for rule in RULE_FIELDS]
    assert all(fields[rule.name].help_text == rule.help for rule in RULE_FIELDS)


def test_the_console_form_has_a_field_for_every_declared_rule():
    form_fields = set(PolicyForm().fields)
    for rule in RULE_FIELDS:
        if rule.kind == "required":
            assert {"required_k", "required_of"} <= form_fields
        else:
            assert rule.name in form_fields


def test_the_console_form_round_trips_every_rule_of_a_policy():
    rules = PolicyRules.from_json(
        {
            "mode": "warn",
            "endorsers_allow": ["site", "a@example.org"],
            "endorsers_deny": ["b@example.org"],
            "images_allow": ["No5o-5ea0sNMlW_75VgGJCv2AcJ"],
            "images_deny": [],
            "checksums_allow": ["da39a3ee5e6b4b0d3255bfef95601890afd80709"],
            "checksums_deny": [],
            "min_endorsements": 2,
            "required_endorsers": {"k": 1, "of": ["site"]},
            "kinds": ["machine"],
            "os": ["ubuntu", "debian"],
            "arch": ["x86_64"],
            "formats": ["qcow2"],
            "max_bytes": 1024,
            "require_location": True,
        }
    )
    initial = PolicyForm.initial_from(rules.to_json())
    form = PolicyForm(data={k: ("on" if v is True else "" if v is None else v) for k, v in initial.items()})
    assert form.is_valid(), form.errors
    assert PolicyRules.from_json(form.rules_json()) == rules
