"""Django admin for storage: the image cache and volumes are read-only here (rows change only through
``storage.images`` and ``storage.services``, which keep states, holders, backends and quotas in step)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from storage.models import CachedImage, Volume, VolumeHolder


@admin.register(CachedImage)
class CachedImageAdmin(admin.ModelAdmin):
    list_display = ["identifier", "state", "bytes", "claimed_at", "finished_at", "location"]
    list_filter = ["state"]
    search_fields = ["identifier", "sha1", "sha256"]
    readonly_fields = [field.name for field in CachedImage._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class VolumeHolderInline(admin.TabularInline):
    model = VolumeHolder
    extra = 0
    readonly_fields = ["holder", "state", "created"]
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Volume)
class VolumeAdmin(admin.ModelAdmin):
    list_display = ["name", "uuid", "project", "kind", "size_gib", "backend", "state", "created"]
    list_filter = ["state", "kind", "backend"]
    search_fields = ["name", "uuid", "iqn", "image_identifier", "holders__holder"]
    readonly_fields = [field.name for field in Volume._meta.fields if field.name != "chap_secret"]
    exclude = ["chap_secret"]
    inlines = [VolumeHolderInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
