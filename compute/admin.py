from __future__ import annotations

from django.contrib import admin

from compute.models import Host, InstanceType


@admin.register(InstanceType)
class InstanceTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "vcpus", "ram_mib", "swap_mib", "root_gib", "is_default", "is_active"]


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["name", "uri", "vcpus", "ram_mib", "enabled", "maintenance"]
    list_filter = ["enabled", "maintenance"]
