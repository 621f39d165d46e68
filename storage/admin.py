"""Django admin for storage: the image cache is read-only here (rows change only through ``storage.images``)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from storage.models import CachedImage


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
