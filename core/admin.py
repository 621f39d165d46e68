from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from core.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["created", "actor_repr", "action", "content_type", "object_repr"]
    list_filter = ["action", "content_type"]
    search_fields = ["actor_repr", "action", "object_repr", "object_id"]
    date_hierarchy = "created"
    readonly_fields = [f.name for f in AuditEntry._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False
