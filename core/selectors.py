"""Reads of the audit log."""

from __future__ import annotations

from django.db.models import QuerySet

from core.models import AuditEntry


def audit_entry_list() -> QuerySet[AuditEntry]:
    """Every audit entry, newest first. Staff only: callers check that before."""
    return AuditEntry.objects.select_related("content_type").order_by("-created", "-id")
