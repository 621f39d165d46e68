"""Django admin for accounts. Registration decisions are made in the console (/accounts/console/…);
quota changes made here go through the quota service so that they are audited."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from accounts.models import ApiToken, Membership, Project, Quota, QuotaHold, RegistrationRequest, SshKey
from accounts.quotas import quota_set


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "personal_owner", "created"]
    search_fields = ["name", "description", "personal_owner__username"]
    inlines = [MembershipInline]
    readonly_fields = ["personal_owner", "created"]


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    list_display = ["project", "instances", "vcpus", "ram_mib", "volume_gib", "volumes", "public_ips"]
    search_fields = ["project__name"]
    readonly_fields = ["project"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # every project gets its quota when it is created

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Quota, form: Any, change: bool) -> None:
        quota_set(actor=request.user, project=obj.project, limits=obj.limits())


@admin.register(QuotaHold)
class QuotaHoldAdmin(admin.ModelAdmin):
    list_display = ["project", "holder", "instances", "vcpus", "ram_mib", "volume_gib", "volumes", "public_ips"]
    list_filter = ["project"]


@admin.register(RegistrationRequest)
class RegistrationRequestAdmin(admin.ModelAdmin):
    list_display = ["username", "email", "email_confirmed", "status", "created", "decided", "decided_by"]
    list_filter = ["status"]
    search_fields = ["username", "email", "first_name", "last_name"]
    exclude = ["password_hash", "ldap_password_hash"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # decided in the console, through the services


@admin.register(SshKey)
class SshKeyAdmin(admin.ModelAdmin):
    list_display = ["user", "name", "key_type", "fingerprint", "created"]
    search_fields = ["user__username", "name", "fingerprint"]
    readonly_fields = ["public_key", "key_type", "bits", "fingerprint"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "name", "created"]
    search_fields = ["user__username", "name"]
    readonly_fields = ["token", "user", "name"]
