from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from compute import services
from compute.models import Attachment, Host, Instance, InstanceType, Lease, Network, UsageRecord
from core.errors import ApplicationError


class InstanceTypeForm(forms.ModelForm):
    class Meta:
        model = InstanceType
        fields = ["name", "vcpus", "ram_mib", "swap_mib", "root_gib", "is_default", "is_active"]

    def _get_validation_exclusions(self) -> set[str]:
        # "One default" is kept by the services (a new default takes it from the old one), not refused by the form.
        return {*super()._get_validation_exclusions(), "is_default"}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        current = InstanceType.objects.get(pk=self.instance.pk) if self.instance.pk else None
        values = {field: cleaned[field] for field in self.changed_data if field in cleaned} if current else cleaned
        try:
            services.instance_type_check(values, current=current)
        except ApplicationError as exc:
            raise forms.ValidationError(exc.message, code=exc.code) from None
        return cleaned


@admin.register(InstanceType)
class InstanceTypeAdmin(admin.ModelAdmin):
    """Through the same services as the admin API: one default, retiring a used type deactivates it, audited."""

    form = InstanceTypeForm
    list_display = ["name", "vcpus", "ram_mib", "swap_mib", "root_gib", "is_default", "is_active"]
    list_filter = ["is_active"]

    def save_model(self, request, obj, form, change) -> None:
        if change:
            changes = {field: form.cleaned_data[field] for field in form.changed_data}
            current = InstanceType.objects.get(pk=obj.pk)
            obj.pk = services.instance_type_update(actor=request.user, instance_type=current, **changes).pk
        else:
            names = ("name", "vcpus", "ram_mib", "swap_mib", "root_gib", "is_default")
            obj.pk = services.instance_type_create(actor=request.user, **{f: form.cleaned_data[f] for f in names}).pk

    def get_deleted_objects(self, objs, request):
        # Instances protect their type from deletion; retiring deactivates such a type instead (delete_model).
        # Nothing else goes with it (instances are never deleted through their type), so no other permission is needed.
        deleted, model_count, _perms_needed, _protected = super().get_deleted_objects(objs, request)
        return deleted, model_count, set(), []

    def delete_model(self, request, obj) -> None:
        if services.instance_type_retire(actor=request.user, instance_type=obj) is not None:
            self.message_user(request, f"{obj.name} was used by instances: it is deactivated, not deleted.")

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # bulk delete would bypass the retire rule
        return actions


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["name", "uri", "vcpus", "ram_mib", "state", "last_seen", "enabled", "maintenance"]
    list_filter = ["state", "enabled", "maintenance"]
    readonly_fields = ["uri", "vcpus", "ram_mib", "state", "last_seen", "message", "created"]


@admin.register(Network)
class NetworkAdmin(admin.ModelAdmin):
    """Read-mostly: networks are made by ``compute.networks.network_create`` (it fills the lease pool)."""

    list_display = ["name", "kind", "cidr", "gateway", "bridge"]
    readonly_fields = ["name", "kind", "cidr", "gateway", "created"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Lease)
class LeaseAdmin(admin.ModelAdmin):
    list_display = ["ip", "mac", "network", "instance", "taken"]
    list_filter = ["network"]
    list_select_related = ["network", "instance"]
    search_fields = ["ip", "mac"]
    readonly_fields = ["network", "ip", "mac", "instance", "taken"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    """Read-only: every change of an instance goes through ``compute.services`` (state transitions, audit)."""

    list_display = ["name", "uuid", "project", "state", "host", "instance_type", "network", "created"]
    list_filter = ["state", "network", "host"]
    list_select_related = ["project", "host", "instance_type"]
    search_fields = ["name", "uuid", "image_identifier"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    """Read-only: reconciliation writes usage records; accounting must not be edited by hand."""

    list_display = ["instance", "project", "start", "end", "vcpus", "ram_mib"]
    list_filter = ["project"]
    date_hierarchy = "start"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin):
    """Read-only: attachments change only through attach, detach and reconciliation, in step with storage."""

    list_display = ["instance", "device", "volume_uuid", "read_only", "state", "updated"]
    list_filter = ["state"]
    search_fields = ["volume_uuid", "instance__name", "instance__uuid"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
