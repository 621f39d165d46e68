"""The policy, its decisions and its dry runs over the API. The rule fields are built from :data:`RULE_FIELDS`."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from marketplace.policy.fields import LIST_KINDS, RULE_FIELDS, RuleField
from marketplace.policy.rules import MODES, PolicyRules


class RuleResultSerializer(serializers.Serializer):
    rule = serializers.CharField(help_text="The rule's JSON name (DESIGN §2.4).")
    outcome = serializers.ChoiceField(choices=["passed", "failed", "not_applicable"])
    reason = serializers.CharField()


class DecisionSerializer(serializers.Serializer):
    identifier = serializers.CharField()
    mode = serializers.ChoiceField(choices=list(MODES))
    allowed = serializers.BooleanField(help_text="Whether the image may be used here now.")
    verdict = serializers.ChoiceField(
        choices=["allowed", "denied", "allowed-with-warnings"],
        help_text="allowed-with-warnings: warn mode let failed rules pass; tell the user.",
    )
    summary = serializers.CharField(help_text="One line: the verdict and every failed rule's reason.")
    trusted_endorsers = serializers.ListField(
        child=serializers.CharField(), help_text="The current endorsements the endorser lists kept."
    )
    rules = RuleResultSerializer(many=True, help_text="One line per rule, in the order of DESIGN §2.4.")


class DryRunChangeSerializer(serializers.Serializer):
    identifier = serializers.CharField()
    title = serializers.CharField()
    reason = serializers.CharField()
    running = serializers.IntegerField(help_text="VMs and static volumes running from the image now.")


class DryRunSerializer(serializers.Serializer):
    evaluated = serializers.IntegerField(help_text="Images evaluated.")
    denied_before = serializers.IntegerField(help_text="Denied under the active policy.")
    denied_after = serializers.IntegerField(help_text="Denied under the proposed policy.")
    running_touched = serializers.IntegerField(
        help_text="VMs and static volumes running now from the images the proposed policy would deny."
    )
    newly_denied = DryRunChangeSerializer(many=True)
    newly_allowed = DryRunChangeSerializer(many=True)
    active_policy = serializers.IntegerField(allow_null=True, help_text="The active policy compared against.")


class RequiredEndorsersSerializer(serializers.Serializer):
    k = serializers.IntegerField(min_value=1)
    of = serializers.ListField(child=serializers.CharField(), help_text="Fingerprints, e-mails or `site`.")


def _rule_field(rule: RuleField, default: Any) -> serializers.Field:
    if rule.kind == "mode":
        return serializers.ChoiceField(choices=list(MODES), default=default, help_text=rule.help)
    if rule.kind in LIST_KINDS:
        return serializers.ListField(child=serializers.CharField(), default=list, help_text=rule.help)
    if rule.kind == "count":
        return serializers.IntegerField(min_value=0, default=default, help_text=rule.help)
    if rule.kind == "bytes":
        return serializers.IntegerField(min_value=1, allow_null=True, default=None, help_text=rule.help)
    if rule.kind == "flag":
        return serializers.BooleanField(default=default, help_text=rule.help)
    return RequiredEndorsersSerializer(allow_null=True, default=None, help_text=rule.help)


_DEFAULTS = PolicyRules()

# The rules by their JSON names (DESIGN §2.4); describes the body, ``PolicyRules.from_json`` reads it.
PolicyRulesSerializer: type[serializers.Serializer] = type(
    "PolicyRulesSerializer",
    (serializers.Serializer,),
    {rule.name: _rule_field(rule, getattr(_DEFAULTS, rule.name)) for rule in RULE_FIELDS},
)


class PolicyInputSerializer(PolicyRulesSerializer):  # type: ignore[misc,valid-type]
    note = serializers.CharField(required=False, allow_blank=True, help_text="Why; kept in the policy's history.")


class PolicySerializer(PolicyRulesSerializer):  # type: ignore[misc,valid-type]
    id = serializers.IntegerField(allow_null=True, help_text="The version; null while the defaults apply.")
    created = serializers.DateTimeField(allow_null=True)
    created_by = serializers.CharField(allow_null=True)
    note = serializers.CharField()
