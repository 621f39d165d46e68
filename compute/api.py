"""The compute REST API (DESIGN §6): instance types, room for VMs, the instances of the actor's projects
(request, terminate, start, shutdown, kill, reboot: 202, the worker on the host does the rest); staff list and
add hosts and networks, and manage instance types. Serializers validate and render; services write."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import generics, permissions, serializers, status
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors as account_selectors
from compute import access, attachments, execution, firewalls, scheduler, selectors, services
from compute.models import FirewallProtocol, FirewallRule, Host, Instance, InstanceType, Network, NetworkKind
from compute.networks import network_create
from core.errors import ApplicationError, NotFound
from core.idempotency import idempotent
from marketplace import selectors as marketplace_selectors


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


class AccessLinkSerializer(serializers.Serializer):
    service = serializers.CharField(help_text="What the VM's port serves: ssh, http, https, or the port number.")
    host = serializers.CharField(
        help_text="Where to connect: the front end's name (PORT_TRANSLATION_HOST) for a VM on local, the VM's own "
        "address for a VM on public."
    )
    port = serializers.IntegerField(
        help_text="The front-end port translated to the VM's port (local), or the VM's own port (public)."
    )
    url = serializers.CharField(required=False, help_text="For web services: the link to open.")
    command = serializers.CharField(required=False, help_text="For ssh: the command line.")


class InstanceOutputSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid")
    image = serializers.CharField(source="image_identifier")
    instance_type = serializers.CharField(source="instance_type.name")
    # Plain sourced fields (no per-row methods): a missing host or lease renders as null.
    host = serializers.CharField(source="host.name", allow_null=True, read_only=True)
    ip = serializers.CharField(source="lease.ip", allow_null=True, read_only=True)
    ipv6 = serializers.CharField(source="lease.ipv6", allow_null=True, read_only=True)
    mac = serializers.CharField(source="lease.mac", allow_null=True, read_only=True)
    volumes = serializers.SerializerMethodField()
    access = serializers.SerializerMethodField()
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
            "ipv6",
            "mac",
            "volumes",
            "access",
            "project",
            "policy_warnings",
            "created",
            "updated",
        ]

    def get_volumes(self, instance: Instance) -> list[str]:
        """The ids of the volumes plugged into the instance (or being plugged in or out), by device name."""
        return [str(attachment.volume_uuid) for attachment in instance.attachments.all()]

    @extend_schema_field(AccessLinkSerializer(many=True))
    def get_access(self, instance: Instance) -> list[dict[str, Any]]:
        """How to reach a VM on ``local`` through the front end's translated ports (empty otherwise)."""
        return access.access_links(instance)


class InstanceListApi(generics.ListAPIView):
    """The instances of your projects, newest first; ``?project=``, ``?state=`` filter. POST requests a VM:
    202 with the instance (``scheduled`` on its host); the worker takes it to ``running`` or ``error``."""

    serializer_class = InstanceOutputSerializer
    queryset = Instance.objects.none()  # for the schema; requests use get_queryset()
    filterset_fields = ["project", "state", "network"]

    class InstanceInputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=63)
        image = serializers.CharField(max_length=27)
        instance_type = serializers.CharField(max_length=50, required=False)
        network = serializers.ChoiceField(choices=NetworkKind.choices)
        ssh_keys = serializers.ListField(child=serializers.CharField(max_length=200), required=False, default=list)
        user_data = serializers.CharField(required=False, default="", allow_blank=True, trim_whitespace=False)
        volatile_gib = serializers.IntegerField(required=False, default=0)
        volumes = serializers.ListField(
            child=serializers.CharField(max_length=36), required=False, default=list, max_length=24
        )
        project = serializers.IntegerField()

    def get_queryset(self) -> QuerySet[Instance]:
        return selectors.instance_list(actor=self.request.user)

    @extend_schema(request=InstanceInputSerializer, responses={202: InstanceOutputSerializer})
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.InstanceInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        project = account_selectors.access_project(actor=request.user, project_id=values.pop("project"))
        try:
            image = marketplace_selectors.image_get(identifier=values.pop("image"))
        except NotFound:
            raise ApplicationError("no such image in the Marketplace", code="image-unknown") from None
        type_name = values.pop("instance_type", None)
        instance_type = (
            selectors.instance_type_list()
            .filter(**({"name": type_name} if type_name else {"is_default": True}))
            .first()
        )
        if instance_type is None:
            raise ApplicationError(f"no instance type {type_name!r} is offered", code="instance-type")
        instance = services.instance_request(
            actor=request.user, project=project, image=image, instance_type=instance_type, **values
        )
        # The request returns the instance as stored, with its host, type and lease: rendered as it is.
        return Response(InstanceOutputSerializer(instance).data, status=status.HTTP_202_ACCEPTED)


class InstanceDetailApi(APIView):
    @extend_schema(responses=InstanceOutputSerializer)
    def get(self, request: Request, instance_id: str) -> Response:
        instance = selectors.access_instance(actor=request.user, instance_id=instance_id)
        return Response(InstanceOutputSerializer(instance).data)

    @extend_schema(request=None, responses={202: InstanceOutputSerializer})
    def delete(self, request: Request, instance_id: str) -> Response:
        """Terminate: 202; the worker destroys the domain, quarantines the root disk and frees the lease."""
        instance = selectors.access_instance(actor=request.user, instance_id=instance_id)
        services.instance_terminate(actor=request.user, instance=instance)
        shown = selectors.access_instance(actor=request.user, instance_id=instance_id)
        return Response(InstanceOutputSerializer(shown).data, status=status.HTTP_202_ACCEPTED)


class PlainTextRenderer(BaseRenderer):
    """``text/plain``: a string as it is; an error as ``detail [code]``."""

    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if isinstance(data, dict):
            data = f"{data.get('detail', '')} [{data.get('code', '')}]\n"
        return str(data).encode(self.charset)


class InstanceConsoleApi(APIView):
    """The tail of the instance's serial console log (what the guest printed), as plain text, read from its host
    (``?bytes=`` up to 1 MiB, default 64 KiB). 503 ``host-unavailable`` when the host's worker does not answer."""

    renderer_classes = [PlainTextRenderer, JSONRenderer]
    MAX_BYTES = 1024 * 1024

    @extend_schema(
        parameters=[OpenApiParameter("bytes", int, description="How much of the end of the log, at most 1 MiB.")],
        responses={(200, "text/plain"): OpenApiTypes.STR},
    )
    def get(self, request: Request, instance_id: str) -> Response:
        instance = selectors.access_instance(actor=request.user, instance_id=instance_id)
        wanted = request.query_params.get("bytes", "65536")
        if not wanted.isdigit() or not 1 <= int(wanted) <= self.MAX_BYTES:
            raise ApplicationError(f"bytes must be 1 to {self.MAX_BYTES}, got {wanted!r}", code="console-bytes")
        text = execution.instance_console(instance=instance, max_bytes=int(wanted))
        return Response(text, content_type="text/plain; charset=utf-8")


class InstanceActionApi(APIView):
    """``start`` (stopped), ``shutdown`` (running, ACPI), ``kill`` (destroy), ``reboot`` (running): 202, or 409
    with the state found when the instance is in no state for it."""

    action: str = ""
    ACTIONS = {
        "start": execution.instance_start,
        "shutdown": execution.instance_shutdown,
        "kill": execution.instance_kill,
        "reboot": execution.instance_reboot,
    }

    @extend_schema(request=None, responses={202: InstanceOutputSerializer})
    def post(self, request: Request, instance_id: str) -> Response:
        instance = selectors.access_instance(actor=request.user, instance_id=instance_id)
        self.ACTIONS[self.action](actor=request.user, instance=instance)
        shown = selectors.access_instance(actor=request.user, instance_id=instance_id)
        return Response(InstanceOutputSerializer(shown).data, status=status.HTTP_202_ACCEPTED)


class InstanceVolumeApi(APIView):
    """``attach`` or ``detach`` a volume of the instance's project (``{"volume": "<volume id>"}``): 202 with the
    instance; the worker on its host plugs the disk in or out (the volume goes ``attaching → in-use`` or
    ``detaching → available``). 409 when the volume is not available (or not attached), or the instance is neither
    running nor stopped; 404 for a volume or an instance that is missing or not yours."""

    action: str = ""
    ACTIONS = {"attach": attachments.instance_attach, "detach": attachments.instance_detach}

    class InstanceVolumeInputSerializer(serializers.Serializer):
        volume = serializers.CharField(max_length=36, help_text="The volume's id.")

    @extend_schema(request=InstanceVolumeInputSerializer, responses={202: InstanceOutputSerializer})
    def post(self, request: Request, instance_id: str) -> Response:
        instance = selectors.access_instance(actor=request.user, instance_id=instance_id)
        data = self.InstanceVolumeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        self.ACTIONS[self.action](actor=request.user, instance=instance, volume_id=data.validated_data["volume"])
        shown = selectors.access_instance(actor=request.user, instance_id=instance_id)
        return Response(InstanceOutputSerializer(shown).data, status=status.HTTP_202_ACCEPTED)


class FirewallRuleSerializer(serializers.ModelSerializer):
    class Meta:
        model = FirewallRule
        fields = ["id", "protocol", "port", "source", "origin", "created"]


class InstanceFirewallApi(APIView):
    """The instance's firewall: the new connections it lets in (every other new connection is dropped). It starts
    with its image's rules (``inbound-port``: tcp from anywhere; ``icmp``); members of its project add rules for the
    ports the site lets users open (``FIREWALL_USER_PORTS``) and delete rules. 404 for an instance that is missing
    or not yours."""

    class FirewallRuleInputSerializer(serializers.Serializer):
        protocol = serializers.ChoiceField(choices=FirewallProtocol.choices)
        port = serializers.IntegerField(required=False, allow_null=True, default=None, help_text="None for icmp.")
        source = serializers.CharField(
            required=False, default="0.0.0.0/0", max_length=18, help_text="IPv4 CIDR the connections come from."
        )

    @extend_schema(responses=FirewallRuleSerializer(many=True))
    def get(self, request: Request, instance_id: str) -> Response:
        instance = selectors.access_instance(actor=request.user, instance_id=instance_id)
        return Response(FirewallRuleSerializer(instance.firewall_rules.order_by("pk"), many=True).data)

    @extend_schema(request=FirewallRuleInputSerializer, responses={201: FirewallRuleSerializer})
    def post(self, request: Request, instance_id: str) -> Response:
        instance = selectors.access_instance(actor=request.user, instance_id=instance_id)
        data = self.FirewallRuleInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        rule = firewalls.firewall_rule_add(actor=request.user, instance=instance, **data.validated_data)
        return Response(FirewallRuleSerializer(rule).data, status=status.HTTP_201_CREATED)


class InstanceFirewallRuleApi(APIView):
    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, instance_id: str, rule_id: str) -> Response:
        """Delete one rule of the instance's firewall (an image's rule too)."""
        instance = selectors.access_instance(actor=request.user, instance_id=instance_id)
        firewalls.firewall_rule_delete(actor=request.user, instance=instance, rule_id=rule_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- staff ------------------------------------------------------------------------------------------


class InstanceTypeAdminOutputSerializer(serializers.ModelSerializer):
    live_instances = serializers.IntegerField(read_only=True)

    class Meta:
        model = InstanceType
        fields = ["name", "vcpus", "ram_mib", "swap_mib", "root_gib", "is_default", "is_active", "live_instances"]


class InstanceTypeAdminListApi(generics.ListAPIView):
    """Every instance type, offered or retired (staff only). POST adds one; ``is_default`` moves the default."""

    permission_classes = [permissions.IsAdminUser]
    serializer_class = InstanceTypeAdminOutputSerializer
    queryset = InstanceType.objects.none()  # for the schema; requests use get_queryset()

    class InstanceTypeInputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=50)
        vcpus = serializers.IntegerField()
        ram_mib = serializers.IntegerField()
        swap_mib = serializers.IntegerField(required=False, default=0)
        root_gib = serializers.IntegerField(required=False, default=10)
        is_default = serializers.BooleanField(required=False, default=False)

    def get_queryset(self) -> QuerySet[InstanceType]:
        return selectors.instance_type_admin_list()

    @extend_schema(request=InstanceTypeInputSerializer, responses={201: InstanceTypeAdminOutputSerializer})
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.InstanceTypeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        itype = services.instance_type_create(actor=request.user, **data.validated_data)
        shown = selectors.instance_type_admin_get(name=itype.name)
        return Response(InstanceTypeAdminOutputSerializer(shown).data, status=status.HTTP_201_CREATED)


class InstanceTypeAdminDetailApi(APIView):
    """One instance type (staff only). PATCH changes it (new requests only: instances keep their sizes);
    DELETE retires it: deleted (204) when no instance was ever made from it, else deactivated (200)."""

    permission_classes = [permissions.IsAdminUser]

    class InstanceTypeChangeSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=50, required=False)
        vcpus = serializers.IntegerField(required=False)
        ram_mib = serializers.IntegerField(required=False)
        swap_mib = serializers.IntegerField(required=False)
        root_gib = serializers.IntegerField(required=False)
        is_default = serializers.BooleanField(required=False)
        is_active = serializers.BooleanField(required=False)

    @extend_schema(responses={200: InstanceTypeAdminOutputSerializer})
    def get(self, request: Request, name: str) -> Response:
        return Response(InstanceTypeAdminOutputSerializer(selectors.instance_type_admin_get(name=name)).data)

    @extend_schema(request=InstanceTypeChangeSerializer, responses={200: InstanceTypeAdminOutputSerializer})
    def patch(self, request: Request, name: str) -> Response:
        itype = selectors.instance_type_admin_get(name=name)
        data = self.InstanceTypeChangeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changed = services.instance_type_update(actor=request.user, instance_type=itype, **data.validated_data)
        return Response(InstanceTypeAdminOutputSerializer(selectors.instance_type_admin_get(name=changed.name)).data)

    @extend_schema(responses={200: InstanceTypeAdminOutputSerializer, 204: None})
    def delete(self, request: Request, name: str) -> Response:
        itype = selectors.instance_type_admin_get(name=name)
        kept = services.instance_type_retire(actor=request.user, instance_type=itype)
        if kept is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(InstanceTypeAdminOutputSerializer(selectors.instance_type_admin_get(name=kept.name)).data)


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
        cpu_allocation_ratio = serializers.DecimalField(max_digits=5, decimal_places=2, required=False)
        ram_allocation_ratio = serializers.DecimalField(max_digits=5, decimal_places=2, required=False)

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
        fields = [
            "id",
            "name",
            "kind",
            "cidr",
            "gateway",
            "ipv6_cidr",
            "ipv6_gateway",
            "dns",
            "bridge",
            "leases_total",
            "leases_held",
            "created",
        ]


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
        ipv6_cidr = serializers.CharField(
            max_length=50, required=False, default="", allow_blank=True, help_text="An IPv6 prefix, e.g. fd00:10::/64."
        )

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
