"""Portal forms of storage. They validate shape only; the services decide."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from storage.models import VolumeKind


class VolumeForm(forms.Form):
    name = forms.CharField(max_length=100)
    project = forms.TypedChoiceField(coerce=int, choices=())
    kind = forms.ChoiceField(
        choices=[(VolumeKind.PERSISTENT, "persistent (empty, read-write)"), (VolumeKind.STATIC, "static (image copy)")],
        initial=VolumeKind.PERSISTENT,
    )
    size_gib = forms.IntegerField(
        label="Size (GiB)", min_value=1, required=False, help_text="Static volumes default to their image's size."
    )
    image = forms.CharField(
        label="Disk image", max_length=27, required=False, help_text="The Marketplace identifier (static volumes)."
    )
    backend = forms.ChoiceField(choices=(), required=False)

    def __init__(self, *args: Any, projects: list[tuple[int, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["project"].choices = projects
        backends = list(settings.STORAGE_BACKENDS)
        self.fields["backend"].choices = [(b, b) for b in backends]
        self.fields["backend"].initial = settings.STORAGE_DEFAULT_BACKEND
        if len(backends) == 1:
            self.fields["backend"].widget = forms.HiddenInput()
