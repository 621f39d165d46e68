from __future__ import annotations

import django_filters
from django.db.models import QuerySet
from rest_framework import generics, permissions, serializers

from core.models import AuditEntry
from core.selectors import audit_entry_list


class AuditEntryFilter(django_filters.FilterSet):
    action = django_filters.CharFilter(field_name="action", lookup_expr="startswith")
    actor = django_filters.CharFilter(field_name="actor_repr")
    object_type = django_filters.CharFilter(method="filter_object_type", label="app_label.model")
    object_id = django_filters.CharFilter()
    since = django_filters.IsoDateTimeFilter(field_name="created", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created", lookup_expr="lt")

    class Meta:
        model = AuditEntry
        fields: list[str] = []

    def filter_object_type(self, queryset: QuerySet[AuditEntry], name: str, value: str) -> QuerySet[AuditEntry]:
        app_label, _, model = value.partition(".")
        return queryset.filter(content_type__app_label=app_label, content_type__model=model)


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
