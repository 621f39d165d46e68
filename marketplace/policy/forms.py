"""The policy's rules as a console form, built from :data:`RULE_FIELDS`, and the policy.cfg upload.

The forms check shape only: ``PolicyForm.rules_json`` gives the JSON that ``PolicyRules.from_json`` reads, which
decides; its per-field errors come back through ``add_rule_errors``."""

from __future__ import annotations

from typing import Any

from django import forms

from marketplace.policy.fields import MODE_LABELS, RULE_FIELDS, RuleField
from marketplace.policy.rules import MODES, PolicyRules

# required_endorsers is two form fields: k, and the endorsers one per line.
_REQUIRED_K, _REQUIRED_OF = "required_k", "required_of"
_LINES_KINDS = frozenset({"endorsers", "identifiers", "checksums"})


def _lines(value: str) -> list[str]:
    """One value per line (commas also separate), blanks dropped."""
    return [item.strip() for item in value.replace(",", "\n").splitlines() if item.strip()]


def _form_fields(rule: RuleField, default: Any) -> dict[str, forms.Field]:
    if rule.kind == "mode":
        choices = [(mode, MODE_LABELS[mode]) for mode in MODES]
        return {rule.name: forms.ChoiceField(label=rule.label, choices=choices, help_text=rule.help)}
    if rule.kind in _LINES_KINDS:
        widget = forms.Textarea(attrs={"rows": 3})
        return {rule.name: forms.CharField(label=rule.label, required=False, help_text=rule.help, widget=widget)}
    if rule.kind == "words":
        return {rule.name: forms.CharField(label=rule.label, required=False, help_text=rule.help)}
    if rule.kind == "count":
        field = forms.IntegerField(label=rule.label, min_value=0, initial=default, help_text=rule.help)
        return {rule.name: field}
    if rule.kind == "bytes":
        return {rule.name: forms.IntegerField(label=rule.label, min_value=1, required=False, help_text=rule.help)}
    if rule.kind == "flag":
        return {rule.name: forms.BooleanField(label=rule.label, required=False, help_text=rule.help)}
    return {
        _REQUIRED_K: forms.IntegerField(label=f"{rule.label}: k", min_value=1, required=False),
        _REQUIRED_OF: forms.CharField(
            label=f"{rule.label}: of",
            required=False,
            help_text=f"{rule.help} One per line.",
            widget=forms.Textarea(attrs={"rows": 3}),
        ),
    }


class _PolicyFormBase(forms.Form):
    @classmethod
    def initial_from(cls, rules: dict[str, Any]) -> dict[str, Any]:
        """The form's initial values from a policy's JSON."""
        initial: dict[str, Any] = {}
        for rule in RULE_FIELDS:
            value = rules.get(rule.name, getattr(PolicyRules(), rule.name))
            if rule.kind in _LINES_KINDS:
                initial[rule.name] = "\n".join(value or [])
            elif rule.kind == "words":
                initial[rule.name] = ", ".join(value or [])
            elif rule.kind == "required":
                initial[_REQUIRED_K] = (value or {}).get("k")
                initial[_REQUIRED_OF] = "\n".join((value or {}).get("of", []))
            else:
                initial[rule.name] = value
        return initial

    def rules_json(self) -> dict[str, Any]:
        data = self.cleaned_data
        rules: dict[str, Any] = {}
        for rule in RULE_FIELDS:
            if rule.kind in _LINES_KINDS or rule.kind == "words":
                rules[rule.name] = _lines(data[rule.name])
            elif rule.kind == "required":
                of = _lines(data[_REQUIRED_OF])
                k = data[_REQUIRED_K]
                rules[rule.name] = {"k": k or 1, "of": of} if of or k else None
            else:
                rules[rule.name] = data[rule.name]
        return rules

    def add_rule_errors(self, errors: dict[str, str]) -> None:
        for name, message in errors.items():
            field = _REQUIRED_OF if name == "required_endorsers" else name if name in self.fields else None
            self.add_error(field, message)


_PolicyFormFields: dict[str, Any] = {}
for _rule in RULE_FIELDS:
    _PolicyFormFields.update(_form_fields(_rule, getattr(PolicyRules(), _rule.name)))
_PolicyFormFields["note"] = forms.CharField(
    label="Note", required=False, max_length=2000, help_text="Why; kept in the policy history."
)

# The site policy's rules as a form, one field per rule (two for required endorsers), and a note.
PolicyForm: type[_PolicyFormBase] = type("PolicyForm", (_PolicyFormBase,), _PolicyFormFields)


class PolicyCfgForm(forms.Form):
    policy_cfg = forms.FileField(
        label="StratusLab policy.cfg",
        help_text="[endorsers], [images], [checksums] sections with whitelist<section>/blacklist<section> keys "
        "(whitelistimages, …), one value per line. "
        "Its lists replace the active policy's; the other rules are kept.",
    )

    def clean_policy_cfg(self) -> str:
        upload = self.cleaned_data["policy_cfg"]
        if upload.size > 1024 * 1024:
            raise forms.ValidationError("policy.cfg is larger than 1 MiB.")
        try:
            return bytes(upload.read()).decode("utf-8")
        except UnicodeDecodeError:
            raise forms.ValidationError("policy.cfg is not UTF-8 text.") from None
