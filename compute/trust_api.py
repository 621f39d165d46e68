"""REST endpoints of the trust-change notices (issue 16): what runs from an image (staff), and an owner's notices."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from compute import trust
from compute.models import TrustNotice
from marketplace import selectors as marketplace_selectors
from marketplace import usage


class ImageUseSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["instance", "volume"])
    id = serializers.CharField()
    name = serializers.CharField()
    state = serializers.CharField()
    owner = serializers.CharField(help_text="The username of whoever requested it.")
    project = serializers.CharField()
    since = serializers.DateTimeField()
    allowed_by = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField()),
        help_text="The entries ({endorser, created}) whose endorsements allowed the image when it was used.",
    )


class AdminImageUsesApi(APIView):
    """Staff: the VMs and static volumes running from an image now, with their owners and projects."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(operation_id="admin_image_instances", responses=ImageUseSerializer(many=True))
    def get(self, request: Request, identifier: str) -> Response:
        image = marketplace_selectors.image_get(identifier=identifier)
        return Response(ImageUseSerializer(usage.image_uses(image.pk), many=True).data)


class TrustNoticeSerializer(serializers.ModelSerializer):
    image = serializers.CharField(source="image_identifier")
    cause = serializers.CharField(source="change.cause")

    class Meta:
        model = TrustNotice
        fields = ["id", "image", "cause", "message", "instances", "created", "dismissed"]


class TrustNoticeListApi(generics.ListAPIView):
    """My notices about images my VMs run from that the site no longer allows (not dismissed)."""

    serializer_class = TrustNoticeSerializer
    queryset = TrustNotice.objects.none()  # for the schema; requests use get_queryset()

    def get_queryset(self) -> QuerySet[TrustNotice]:
        return trust.trust_notices_open(user=self.request.user).select_related("change")


class TrustNoticeDismissApi(APIView):
    """Hide one of my notices (it stays in the audit log)."""

    @extend_schema(request=None, responses={200: TrustNoticeSerializer})
    def post(self, request: Request, notice_id: int) -> Response:
        notice = trust.trust_notice_dismiss(actor=request.user, notice_id=notice_id)
        return Response(TrustNoticeSerializer(notice).data, status=status.HTTP_200_OK)
