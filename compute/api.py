"""The compute REST API (DESIGN §6), read-only for researchers for now: instance types, room for VMs, and
the instances of their projects; staff list and add hosts and networks. Serializers validate and render;
services write. ``POST /api/v1/compute/instances/`` waits for the worker steps."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from compute import scheduler, selectors, services
from compute.models import Host, Instance, InstanceType, Network, NetworkKind
from compute.networks import network_create
from core.idempotency import idempotent


class InstanceTypeOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = InstanceType
        fields = ["name", "vcpus", "ram_mib", "swap_mib", "root_gib", "is_default"]


class InstanceTypeListApi(generics.ListAPIView):
    """The instance types this site offers."""

    serializer_class = InstanceTypeOutputSerializer
    queryset = InstanceType.objects.none()  # for the schema; requests use get_queryset()

    def get_queryset(self) -> QuerySet[InstanceType]:
        return selectors.instance_type_list()


class CapacityApi(APIView):
    """Room for VMs: per instance type, how many more fit on the cluster now, out of how many on it empty."""

    class CapacityOutputSerializer(serializers.Serializer):
        instance_type = serializers.CharField()
        vcpus = serializers.IntegerField()
        ram_mib = serializers.IntegerField()
        fits_now = serializers.IntegerField()
        fits_when_empty = serializers.IntegerField()

    @extend_schema(responses=CapacityOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        rows = [
            {
                "instance_type": room.instance_type.name,
                "vcpus": room.instance_type.vcpus,
                "ram_mib": room.instance_type.ram_mib,
                "fits_now": room.fits_now,
                "fits_when_empty": room.fits_when_empty,
            }
            for room in scheduler.capacity()
        ]
        return Response(self.CapacityOutputSerializer(rows, many=True).data)


class InstanceOutputSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid")
    image = serializers.CharField(source="image_identifier")
    instance_type = serializers.CharField(source="instance_type.name")
    host = serializers.SerializerMethodField()
    ip = serializers.SerializerMethodField()
    mac = serializers.SerializerMethodField()
    volumes = serializers.SerializerMethodField()
    project = serializers.IntegerField(source="project_id")

    class Meta:
        model = Instance
        fields = [
            "id",
            "name",
            "state",
            "state_message",
            "image",
            "instance_type",
            "vcpus",
            "ram_mib",
            "root_gib",
            "swap_mib",
            "volatile_gib",
            "host",
            "network",
            "ip",
            "mac",
            "volumes",
            "project",
            "policy_warnings",
            "created",
            "updated",
        ]

    def get_host(self, instance: Instance) -> str | None:
        return instance.host.name if instance.host else None

    def _lease(self, instance: Instance):
        try:
            return instance.lease
        except Instance.lease.RelatedObjectDoesNotExist:
            return None

    def get_ip(self, instance: Instance) -> str | None:
        lease = self._lease(instance)
        return lease.ip if lease else None

    def get_mac(self, instance: Instance) -> str | None:
        lease = self._lease(instance)
        return lease.mac if lease else None

    def get_volumes(self, instance: Instance) -> list[int]:
        return []  # volume attachments come with the storage integration


class InstanceListApi(generics.ListAPIView):
    """The instances of your projects, newest first; ``?project=``, ``?state=`` filter."""

    serializer_class = InstanceOutputSerializer
    queryset = Instance.objects.none()  # for the schema; requests use get_queryset()
    filterset_fields = ["project", "state", "network"]

    def get_queryset(self) -> QuerySet[Instance]:
        return selectors.instance_list(actor=self.request.user)


class InstanceDetailApi(APIView):
    @extend_schema(responses=InstanceOutputSerializer)
    def get(self, request: Request, instance_id: str) -> Response:
        instance = selectors.access_instance(actor=request.user, instance_id=instance_id)
        return Response(InstanceOutputSerializer(instance).data)


# --- staff ------------------------------------------------------------------------------------------


class HostOutputSerializer(serializers.ModelSerializer):
    live_instances = serializers.IntegerField(read_only=True)

    class Meta:
        model = Host
        fields = [
            "id",
            "name",
            "uri",
            "vcpus",
            "ram_mib",
            "cpu_allocation_ratio",
            "ram_allocation_ratio",
            "enabled",
            "maintenance",
            "state",
            "last_seen",
            "message",
            "live_instances",
            "created",
        ]


class HostListApi(generics.ListAPIView):
    """Hypervisor hosts (staff only). POST registers a host by its libvirt URI; its capacity is what
    libvirt reports."""

    permission_classes = [permissions.IsAdminUser]
    serializer_class = HostOutputSerializer
    queryset = Host.objects.none()  # for the schema; requests use get_queryset()

    class HostInputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        uri = serializers.CharField(max_length=300)

    def get_queryset(self) -> QuerySet[Host]:
        return selectors.host_list()

    @extend_schema(request=HostInputSerializer, responses={201: HostOutputSerializer})
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.HostInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        host = services.host_register(actor=request.user, **data.validated_data)
        return Response(
            HostOutputSerializer(selectors.host_list().get(pk=host.pk)).data, status=status.HTTP_201_CREATED
        )


class NetworkOutputSerializer(serializers.ModelSerializer):
    leases_total = serializers.IntegerField(read_only=True)
    leases_held = serializers.IntegerField(read_only=True)

    class Meta:
        model = Network
        fields = ["id", "name", "kind", "cidr", "gateway", "dns", "bridge", "leases_total", "leases_held", "created"]


class NetworkListApi(generics.ListAPIView):
    """Networks (staff only). POST adds one, with a lease for every usable address."""

    permission_classes = [permissions.IsAdminUser]
    serializer_class = NetworkOutputSerializer
    queryset = Network.objects.none()  # for the schema; requests use get_queryset()

    class NetworkInputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        kind = serializers.ChoiceField(choices=NetworkKind.choices)
        cidr = serializers.CharField(max_length=50)
        gateway = serializers.CharField(max_length=50)
        dns = serializers.ListField(child=serializers.CharField(max_length=50), required=False, default=list)
        bridge = serializers.CharField(max_length=15)

    def get_queryset(self) -> QuerySet[Network]:
        return selectors.network_list()

    @extend_schema(request=NetworkInputSerializer, responses={201: NetworkOutputSerializer})
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.NetworkInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        network = network_create(actor=request.user, **data.validated_data)
        return Response(
            NetworkOutputSerializer(selectors.network_list().get(pk=network.pk)).data,
            status=status.HTTP_201_CREATED,
        )
