"""The storage REST API (DESIGN §6): the volumes of the actor's projects. POST requests one (202: the worker
makes it, ``creating`` → ``available`` or ``error``); DELETE deletes one (202; 409 ``volume-in-use`` while a VM
holds it). Attaching and detaching are compute actions (``/api/v1/compute/instances/{id}/attach/``).
Serializers validate and render; services write."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors as account_selectors
from core.errors import ApplicationError, NotFound
from core.idempotency import idempotent
from marketplace import selectors as marketplace_selectors
from storage import selectors, services
from storage.models import Volume, VolumeBackendName, VolumeKind


class VolumeOutputSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid")
    image = serializers.CharField(source="image_identifier")
    attached_to = serializers.SerializerMethodField()
    project = serializers.IntegerField(source="project_id")

    class Meta:
        model = Volume
        fields = [
            "id",
            "name",
            "kind",
            "size_gib",
            "state",
            "state_message",
            "attached_to",
            "backend",
            "format",
            "image",
            "project",
            "created",
            "updated",
        ]

    def get_attached_to(self, volume: Volume) -> list[str]:
        """The VMs (instance ids) holding the volume, attached or being attached or detached."""
        return selectors.volume_holders(volume)


class VolumeListApi(generics.ListAPIView):
    """The volumes of your projects, newest first; ``?project=``, ``?state=``, ``?kind=`` filter. POST requests a
    volume: ``persistent`` (empty, ``size_gib``) or ``static`` (a read-only copy of the Marketplace disk image
    ``image``; ``size_gib`` defaults to the image's). 202 with the volume ``creating``."""

    serializer_class = VolumeOutputSerializer
    queryset = Volume.objects.none()  # for the schema; requests use get_queryset()
    filterset_fields = ["project", "state", "kind"]

    class VolumeInputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        size_gib = serializers.IntegerField(required=False, min_value=1)
        kind = serializers.ChoiceField(
            choices=[VolumeKind.PERSISTENT, VolumeKind.STATIC], required=False, default=VolumeKind.PERSISTENT
        )
        image = serializers.CharField(max_length=27, required=False)
        backend = serializers.ChoiceField(choices=VolumeBackendName.choices, required=False)
        project = serializers.IntegerField()

    def get_queryset(self) -> QuerySet[Volume]:
        return selectors.volumes_visible_to(self.request.user)

    @extend_schema(request=VolumeInputSerializer, responses={202: VolumeOutputSerializer})
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.VolumeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        project = account_selectors.access_project(actor=request.user, project_id=values.pop("project"))
        image = None
        if identifier := values.pop("image", None):
            try:
                image = marketplace_selectors.image_get(identifier=identifier)
            except NotFound:
                raise ApplicationError("no such image in the Marketplace", code="image-unknown") from None
        volume = services.volume_create(
            actor=request.user,
            project=project,
            name=values["name"],
            size_gib=values.get("size_gib"),
            kind=values["kind"],
            image=image,
            backend=values.get("backend"),
        )
        shown = selectors.access_volume(actor=request.user, volume_id=volume.uuid)
        return Response(VolumeOutputSerializer(shown).data, status=status.HTTP_202_ACCEPTED)


class VolumeDetailApi(APIView):
    @extend_schema(responses=VolumeOutputSerializer)
    def get(self, request: Request, volume_id: str) -> Response:
        volume = selectors.access_volume(actor=request.user, volume_id=volume_id)
        return Response(VolumeOutputSerializer(volume).data)

    @extend_schema(request=None, responses={202: VolumeOutputSerializer})
    def delete(self, request: Request, volume_id: str) -> Response:
        """Delete: 202, the worker removes the volume from its backend (``deleting`` → ``deleted``); 409
        ``volume-in-use`` while a VM holds it."""
        volume = selectors.access_volume(actor=request.user, volume_id=volume_id)
        services.volume_delete(actor=request.user, volume=volume)
        shown = selectors.access_volume(actor=request.user, volume_id=volume_id)
        return Response(VolumeOutputSerializer(shown).data, status=status.HTTP_202_ACCEPTED)
