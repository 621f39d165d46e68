"""Portal forms of the Marketplace. They validate shape only; the services decide."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings


class EntryUploadForm(forms.Form):
    document = forms.FileField(
        label="Signed metadata file",
        help_text="The XML document your signing tool wrote (it carries its OpenPGP signature).",
    )

    def clean_document(self) -> bytes:
        upload = self.cleaned_data["document"]
        limit = int(getattr(settings, "MARKETPLACE_MAX_ENTRY_BYTES", 1024 * 1024))
        if upload.size > limit:
            raise forms.ValidationError(f"The file is {upload.size} bytes; the limit is {limit} bytes.")
        return bytes(upload.read())


class PgpKeyForm(forms.Form):
    armored = forms.CharField(
        label="Public key",
        widget=forms.Textarea(attrs={"rows": 10, "placeholder": "-----BEGIN PGP PUBLIC KEY BLOCK-----"}),
        max_length=200_000,
        strip=False,
        help_text="ASCII-armored, as `gpg --armor --export you@example.org` prints it. "
        "One of its user IDs must carry your account's e-mail.",
    )


def _lines(value: str) -> list[str]:
    """One value per line (commas also separate), blanks dropped."""
    return [item.strip() for item in value.replace(",", "\n").splitlines() if item.strip()]


def _list_field(label: str, help_text: str, *, rows: int = 3) -> forms.CharField:
    return forms.CharField(
        label=label, required=False, help_text=help_text, widget=forms.Textarea(attrs={"rows": rows})
    )


class PolicyForm(forms.Form):
    """The site policy's rules as a form; ``rules_json`` gives the JSON that ``PolicyRules.from_json`` reads,
    which decides (its per-field errors come back through ``add_rule_errors``)."""

    mode = forms.ChoiceField(
        choices=[("enforce", "enforce: deny"), ("warn", "warn: allow, tell the user"), ("audit", "audit: allow, log")],
        help_text="What happens when a rule fails.",
    )
    min_endorsements = forms.IntegerField(
        label="Minimum current endorsements",
        min_value=0,
        initial=1,
        help_text="Expired, deprecated and revoked never count.",
    )
    required_k = forms.IntegerField(label="Required endorsers: k", min_value=1, required=False)
    required_of = _list_field(
        "Required endorsers: of",
        "k of these must endorse it: key fingerprints, e-mails or the word site; one per line. Empty: no such rule.",
    )
    endorsers_allow = _list_field("Endorsers allowed", "Fingerprints, e-mails or site; empty = any endorser.")
    endorsers_deny = _list_field("Endorsers denied", "Their endorsements are ignored.")
    images_allow = _list_field("Images allowed", "Identifiers; empty = any image.")
    images_deny = _list_field("Images denied", "Identifiers.")
    checksums_allow = _list_field("Checksums allowed", "SHA-1 or SHA-256 digests; empty = any.")
    checksums_deny = _list_field("Checksums denied", "SHA-1 or SHA-256 digests.")
    kinds = forms.CharField(label="Kinds", required=False, help_text="machine, disk; empty = any.")
    os = forms.CharField(label="Operating systems", required=False, help_text="Comma-separated; empty = any.")
    arch = forms.CharField(label="Architectures", required=False, help_text="Comma-separated; empty = any.")
    formats = forms.CharField(label="Formats", required=False, help_text="raw, qcow2; empty = any.")
    max_bytes = forms.IntegerField(
        label="Largest image (bytes)", min_value=1, required=False, help_text="Empty = any size."
    )
    require_location = forms.BooleanField(label="Require a download location", required=False)
    note = forms.CharField(label="Note", required=False, max_length=2000, help_text="Why; kept in the policy history.")

    LISTS = ("endorsers_allow", "endorsers_deny", "images_allow", "images_deny", "checksums_allow", "checksums_deny")
    WORDS = ("kinds", "os", "arch", "formats")

    @classmethod
    def initial_from(cls, rules: dict) -> dict:
        """The form's initial values from a policy's JSON."""
        initial = {name: "\n".join(rules.get(name, [])) for name in cls.LISTS}
        initial.update({name: ", ".join(rules.get(name, [])) for name in cls.WORDS})
        required = rules.get("required_endorsers") or {}
        initial.update(
            mode=rules.get("mode", "enforce"),
            min_endorsements=rules.get("min_endorsements", 1),
            required_k=required.get("k"),
            required_of="\n".join(required.get("of", [])),
            max_bytes=rules.get("max_bytes"),
            require_location=rules.get("require_location", False),
        )
        return initial

    def rules_json(self) -> dict:
        data = self.cleaned_data
        rules: dict = {name: _lines(data[name]) for name in (*self.LISTS, *self.WORDS)}
        of = _lines(data["required_of"])
        rules.update(
            mode=data["mode"],
            min_endorsements=data["min_endorsements"],
            required_endorsers={"k": data["required_k"] or 1, "of": of} if of or data["required_k"] else None,
            max_bytes=data["max_bytes"],
            require_location=data["require_location"],
        )
        return rules

    def add_rule_errors(self, errors: dict[str, str]) -> None:
        for name, message in errors.items():
            self.add_error(
                "required_of" if name == "required_endorsers" else name if name in self.fields else None, message
            )


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


class SiteEndorseForm(forms.Form):
    """Both site forms sit on the review page: their own ids keep each label on its own field."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "endorse_%s")
        super().__init__(*args, **kwargs)

    valid_until = forms.DateTimeField(
        label="Valid until (UTC)",
        required=False,
        help_text="Optional expiry of the site's endorsement, e.g. 2027-12-31 23:59.",
    )
    reason = forms.CharField(label="Note", required=False, max_length=2000)


class SiteDeprecateForm(forms.Form):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "deprecate_%s")
        super().__init__(*args, **kwargs)

    reason = forms.CharField(
        label="Reason",
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Written into the signed entry.",
    )
