"""Marketplace REST API (DESIGN §6): endorsers and one endorser's history."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from marketplace import selectors
from marketplace.api.entries import EntrySummarySerializer
from marketplace.filters import EndorserFilter, EndorserHistoryFilter
from marketplace.models import Endorser, Entry


class EndorserSerializer(serializers.ModelSerializer):
    image_count = serializers.IntegerField(help_text="Images this endorser has an entry for.")
    current_count = serializers.IntegerField(help_text="Images this endorser currently endorses.")
    url = serializers.SerializerMethodField()

    class Meta:
        model = Endorser
        fields = [
            "email",
            "subject",
            "first_endorsed",
            "last_endorsed",
            "entry_count",
            "image_count",
            "current_count",
            "url",
        ]

    def get_url(self, endorser: Endorser) -> str:
        return reverse(
            "api-marketplace-endorser", kwargs={"email": endorser.email}, request=self.context.get("request")
        )


class EndorserListApi(generics.ListAPIView):
    permission_classes = [permissions.AllowAny]
    serializer_class = EndorserSerializer
    filterset_class = EndorserFilter

    def get_queryset(self) -> QuerySet[Endorser]:
        return selectors.endorser_list()


class EndorserHistoryApi(generics.ListAPIView):
    """Every entry one endorser has signed, newest first."""

    permission_classes = [permissions.AllowAny]
    serializer_class = EntrySummarySerializer
    filterset_class = EndorserHistoryFilter

    @extend_schema(operation_id="marketplace_endorsers_history")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Entry]:
        if getattr(self, "swagger_fake_view", False):
            return Entry.objects.none()
        endorser = selectors.endorser_get(email=self.kwargs["email"])
        return selectors.endorser_history(endorser=endorser)
