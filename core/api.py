from __future__ import annotations

from django.db.models import QuerySet
from rest_framework import generics, permissions, serializers

from core.filters import AuditEntryFilter
from core.models import AuditEntry
from core.selectors import audit_entry_list


class AuditListApi(generics.ListAPIView):
    """The audit log, newest first (staff only). ``action`` matches a dotted prefix."""

    class OutputSerializer(serializers.ModelSerializer):
        object_type = serializers.SerializerMethodField()

        class Meta:
            model = AuditEntry
            fields = ["id", "created", "actor_repr", "action", "object_type", "object_id", "object_repr", "details"]

        def get_object_type(self, entry: AuditEntry) -> str | None:
            ct = entry.content_type
            return f"{ct.app_label}.{ct.model}" if ct else None

    permission_classes = [permissions.IsAdminUser]
    serializer_class = OutputSerializer
    filterset_class = AuditEntryFilter

    def get_queryset(self) -> QuerySet[AuditEntry]:
        return audit_entry_list()
