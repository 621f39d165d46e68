from __future__ import annotations

from django.contrib import admin

from compute.models import Attachment, Host, Instance, InstanceType, Lease, Network, UsageRecord


@admin.register(InstanceType)
class InstanceTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "vcpus", "ram_mib", "swap_mib", "root_gib", "is_default", "is_active"]


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
