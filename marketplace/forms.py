"""Portal forms of the Marketplace. They validate shape only; the services decide."""

from __future__ import annotations

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
