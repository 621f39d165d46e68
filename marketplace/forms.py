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
