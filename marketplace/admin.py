"""Django admin for the Marketplace: read-mostly, since entries are immutable and keys change through services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from marketplace.models import (
    Endorser,
    Entry,
    Image,
    ImageListImage,
    ImageListSubscription,
    ImageListVersion,
    PgpKey,
    SiteKey,
    SitePolicy,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows here change only through the services (which verify signatures and write the audit log)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(PgpKey)
class PgpKeyAdmin(ReadOnlyAdmin):
    list_display = ["fingerprint", "owner", "created", "expires", "registered", "revoked_at"]
    list_select_related = ["owner"]
    search_fields = ["fingerprint", "owner__username", "emails"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]


@admin.register(Endorser)
class EndorserAdmin(ReadOnlyAdmin):
    list_display = ["email", "subject", "entry_count", "first_endorsed", "last_endorsed"]
    search_fields = ["email", "subject"]


class KindFilter(admin.SimpleListFilter):
    """Machine or disk images: the two kinds there are, not a DISTINCT over every row (a second at a million
    entries)."""

    title = "kind"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("machine", "machine"), ("disk", "disk")]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        return queryset.filter(kind=self.value()) if self.value() else queryset


@admin.register(Image)
class ImageAdmin(ReadOnlyAdmin):
    list_display = ["identifier", "title", "os", "os_version", "arch", "kind", "updated"]
    search_fields = ["identifier", "title", "sha1", "arch"]
    list_filter = [KindFilter]
    ordering = ["-updated", "-id"]  # the mp_image_updated index
    show_full_result_count = False


@admin.register(Entry)
class EntryAdmin(ReadOnlyAdmin):
    list_display = ["image", "endorser", "created", "is_latest", "deprecated", "valid_until", "fingerprint"]
    list_select_related = ["image", "endorser"]
    search_fields = ["image__identifier", "endorser__email", "fingerprint", "title"]
    list_filter = ["is_latest", "deprecated", KindFilter]
    exclude = ["raw", "search_text"]
    ordering = ["-id"]  # newest stored first, by the primary key's index (no sort of every entry)
    show_full_result_count = False


@admin.register(SiteKey)
class SiteKeyAdmin(ReadOnlyAdmin):
    """Made by ``manage.py create_site_key``; shown in the console's site key page."""

    list_display = ["fingerprint", "uid", "created", "registered"]


@admin.register(SitePolicy)
class SitePolicyAdmin(ReadOnlyAdmin):
    """Changed in the console (with its dry run) or through the admin API, never here."""

    list_display = ["id", "is_active", "created", "created_by", "note"]
    list_select_related = ["created_by"]
    list_filter = ["is_active"]


class ImageListVersionInline(admin.TabularInline):
    model = ImageListVersion
    fields = ["version", "created", "expires", "signer_subject", "fingerprint", "received"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ImageListSubscription)
class ImageListSubscriptionAdmin(ReadOnlyAdmin):
    """HEPiX image lists change through ``manage.py subscribe_imagelist`` and the periodic refresh (verified)."""

    list_display = [
        "source",
        "list_identifier",
        "version",
        "expires",
        "endorser",
        "state",
        "error_code",
        "last_fetched",
    ]
    list_select_related = ["endorser"]
    list_filter = ["state"]
    search_fields = ["source", "list_identifier", "title", "endorser__email"]
    inlines = [ImageListVersionInline]


@admin.register(ImageListImage)
class ImageListImageAdmin(ReadOnlyAdmin):
    list_display = ["uuid", "image", "list_version", "in_list"]
    list_select_related = ["image", "list_version__subscription"]
    search_fields = ["uuid", "image__identifier"]
