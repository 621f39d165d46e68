"""Marketplace REST API (DESIGN §6): images, their search and their detail."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from marketplace import selectors
from marketplace.api.entries import ERROR, EntrySummarySerializer
from marketplace.filters import ImageSearchFilter
from marketplace.models import Image


class ImageSerializer(serializers.ModelSerializer):
    """An image with each endorser's latest entry and how many of them count now. Its title, description, OS,
    arch, kind and format are the claims of its most trusted current endorsement (the site's, else the one
    whose timeline started first); each endorsement carries its own claims. ``bytes`` and ``checksums`` are
    fixed by the first accepted entry."""

    current_endorsements = serializers.SerializerMethodField()
    # A declared nested field: DRF builds it once per list, not once per image.
    endorsements = EntrySummarySerializer(source="latest_entries", many=True, read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = [
            "identifier",
            "title",
            "description",
            "os",
            "os_version",
            "arch",
            "kind",
            "format",
            "bytes",
            "sha1",
            "checksums",
            "first_endorsed",
            "updated",
            "current_endorsements",
            "endorsements",
            "url",
        ]

    def get_current_endorsements(self, image: Image) -> int:
        return len(selectors.current_endorsements(image, now=self.context.get("now")))

    def get_url(self, image: Image) -> str:
        return reverse(
            "api-marketplace-image", kwargs={"identifier": image.identifier}, request=self.context.get("request")
        )


class ImageListApi(generics.ListAPIView):
    """Search images. Each result carries every endorser's latest entry and its status."""

    permission_classes = [permissions.AllowAny]
    serializer_class = ImageSerializer
    filterset_class = ImageSearchFilter

    def get_queryset(self) -> QuerySet[Image]:
        return selectors.image_list()

    def get_serializer_context(self) -> dict[str, Any]:
        # One clock for the whole page, so that every status in it is judged at the same moment.
        return {**super().get_serializer_context(), "now": timezone.now()}


class ImageDetailApi(APIView):
    permission_classes = [permissions.AllowAny]

    @extend_schema(operation_id="marketplace_images_retrieve", responses={200: ImageSerializer, 404: ERROR})
    def get(self, request: Request, identifier: str) -> Response:
        image = selectors.image_get(identifier=identifier)
        selectors.image_show(image)
        return Response(ImageSerializer(image, context={"request": request}).data)
