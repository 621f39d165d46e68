"""Forms and filters of compute's admin console pages. They collect input; the services check the rules and write."""

from __future__ import annotations

from typing import Any

import django_filters
from django import forms
from django.db.models import Q, QuerySet

from compute.models import Instance, InstanceState, InstanceType
from compute.services import INSTANCE_TYPE_LIMITS
from storage.models import Volume, VolumeKind, VolumeState


class MaintenanceForm(forms.Form):
    reason = forms.CharField(
        label="Reason (for the audit log)", max_length=500, required=False, widget=forms.TextInput()
    )


def _size_field(name: str, label: str, **kwargs: Any) -> forms.IntegerField:
    low, high = INSTANCE_TYPE_LIMITS[name]
    return forms.IntegerField(label=label, min_value=low, max_value=high, **kwargs)


class InstanceTypeForm(forms.Form):
    """A new instance type, or the changes to one (the service checks the name and the default's rules)."""

    name = forms.CharField(
        max_length=50, help_text="lower-case letters, digits, dots, hyphens and underscores, e.g. m1.small"
    )
    vcpus = _size_field("vcpus", "vCPUs")
    ram_mib = _size_field("ram_mib", "RAM (MiB)")
    swap_mib = _size_field("swap_mib", "Swap (MiB)", initial=0)
    root_gib = _size_field("root_gib", "Root disk (GiB)", initial=10)
    is_default = forms.BooleanField(label="Default type of new requests", required=False)
    is_active = forms.BooleanField(label="Offered (disable to stop new requests)", required=False, initial=True)

    def changes(self, itype: InstanceType) -> dict[str, Any]:
        """The fields that differ from ``itype`` (only they go to the service and the audit log)."""
        return {field: value for field, value in self.cleaned_data.items() if getattr(itype, field) != value}

    @classmethod
    def for_type(cls, itype: InstanceType, data: Any = None) -> InstanceTypeForm:
        fields = ("name", "vcpus", "ram_mib", "swap_mib", "root_gib", "is_default", "is_active")
        return cls(data, initial={field: getattr(itype, field) for field in fields}, prefix=f"type-{itype.pk}")


class InstanceTypeCreateForm(InstanceTypeForm):
    is_active = None  # type: ignore[assignment]  # a new type is offered


def _username_filter(queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
    return queryset.filter(created_by__username__iexact=value.strip())


def _project_filter(queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
    return queryset.filter(project__name__iexact=value.strip())


def _image_filter(queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
    value = value.strip()
    return queryset.filter(Q(image_identifier=value) | Q(image__title__icontains=value))


class InstanceFilter(django_filters.FilterSet):
    """The console's filters of every instance: project and owner by name, state, host, image by identifier or title."""

    project = django_filters.CharFilter(label="Project", method=_project_filter, max_length=100)
    owner = django_filters.CharFilter(label="Owner (username)", method=_username_filter, max_length=150)
    state = django_filters.ChoiceFilter(label="State", choices=InstanceState.choices, empty_label="any")
    # A name rather than a list of every host: a site may run thousands.
    host = django_filters.CharFilter(label="Host name", field_name="host__name", lookup_expr="iexact", max_length=100)
    image = django_filters.CharFilter(label="Image (identifier or title)", method=_image_filter, max_length=500)

    class Meta:
        model = Instance
        fields: list[str] = []


class VolumeFilter(django_filters.FilterSet):
    """The console's filters of every volume: project, owner, state, kind and (static volumes) image."""

    project = django_filters.CharFilter(label="Project", method=_project_filter, max_length=100)
    owner = django_filters.CharFilter(label="Owner (username)", method=_username_filter, max_length=150)
    state = django_filters.ChoiceFilter(label="State", choices=VolumeState.choices, empty_label="any")
    kind = django_filters.ChoiceFilter(label="Kind", choices=VolumeKind.choices, empty_label="any")
    image = django_filters.CharFilter(label="Image (identifier or title)", method=_image_filter, max_length=500)

    class Meta:
        model = Volume
        fields: list[str] = []


class LeaseFilter(forms.Form):
    HELD_CHOICES = [("", "all"), ("held", "held"), ("free", "free")]
    held = forms.ChoiceField(label="Show", choices=HELD_CHOICES, required=False)
