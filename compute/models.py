from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class InstanceType(models.Model):
    """A size of VM offered by the site (StratusLab's t1.micro … c1.xlarge)."""

    name = models.CharField(max_length=50, unique=True)
    vcpus = models.PositiveIntegerField()
    ram_mib = models.PositiveIntegerField()
    swap_mib = models.PositiveIntegerField(default=0)
    root_gib = models.PositiveIntegerField(default=10)
    is_default = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["vcpus", "ram_mib", "name"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="one_default_type"),
            models.CheckConstraint(condition=Q(vcpus__gt=0) & Q(ram_mib__gt=0), name="type_has_size"),
        ]

    def __str__(self) -> str:
        return self.name


class Host(models.Model):
    """A hypervisor reached through libvirt at ``uri``; capacity is what libvirt reported."""

    name = models.CharField(max_length=100, unique=True)
    uri = models.CharField(max_length=300, unique=True)
    vcpus = models.PositiveIntegerField()
    ram_mib = models.PositiveIntegerField()
    cpu_allocation_ratio = models.DecimalField(max_digits=5, decimal_places=2, default=4)
    ram_allocation_ratio = models.DecimalField(max_digits=5, decimal_places=2, default=1)
    enabled = models.BooleanField(default=True)
    maintenance = models.BooleanField(default=False)
    state = models.CharField(max_length=4, choices=[("up", "up"), ("down", "down")], default="up")
    last_seen = models.DateTimeField(null=True, blank=True, help_text="When libvirt last answered.")
    message = models.TextField(blank=True, help_text="Why the host is down, as libvirt said it.")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.CheckConstraint(condition=Q(state__in=["up", "down"]), name="host_state_known"),
            models.CheckConstraint(
                condition=Q(cpu_allocation_ratio__gt=0) & Q(ram_allocation_ratio__gt=0), name="host_ratios_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class HostState(models.TextChoices):
    UP = "up"
    DOWN = "down"


class NetworkKind(models.TextChoices):
    PUBLIC = "public"
    LOCAL = "local"
    PRIVATE = "private"


class Network(models.Model):
    """An address class (DESIGN §4): a pool of IP/MAC leases on one bridge of every host."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=NetworkKind.choices, unique=True)
    cidr = models.CharField(max_length=50, unique=True)
    gateway = models.GenericIPAddressField()
    dns = models.JSONField(default=list, blank=True, help_text="DNS servers given to VMs.")
    bridge = models.CharField(max_length=15, help_text="The Linux bridge the VMs' NICs join on every host.")
    ipv6_cidr = models.CharField(
        max_length=50, blank=True, help_text="An IPv6 prefix: every lease then has an IPv6 address too."
    )
    ipv6_gateway = models.GenericIPAddressField(protocol="IPv6", null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind} {self.cidr})"


class Lease(models.Model):
    """One address of a network: free when ``instance`` is null, else held by that instance."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="leases")
    ip = models.GenericIPAddressField()
    ipv6 = models.GenericIPAddressField(protocol="IPv6", null=True, blank=True)
    mac = models.CharField(max_length=17)
    # One-to-one: a lease is held by at most one instance and an instance holds at most one lease.
    instance = models.OneToOneField("Instance", null=True, blank=True, on_delete=models.SET_NULL, related_name="lease")
    taken = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["network", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["network", "ip"], name="lease_ip_unique_per_network"),
            models.UniqueConstraint(fields=["network", "mac"], name="lease_mac_unique_per_network"),
        ]
        indexes = [models.Index(fields=["network", "instance"], name="lease_free_per_network")]

    def __str__(self) -> str:
        return f"{self.ip} ({self.mac})"


class InstanceState(models.TextChoices):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    PREPARING = "preparing"
    BOOTING = "booting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    ERROR = "error"


# States in which an instance holds host capacity, quota and its lease. ``error`` keeps them until the
# instance is terminated (its disks and domain may still exist on the host).
LIVE_STATES = tuple(s.value for s in InstanceState if s.value != InstanceState.TERMINATED)


class InstanceQuerySet(models.QuerySet["Instance"]):
    def live(self) -> InstanceQuerySet:
        # The live states named (not "all but terminated"): the condition of the partial indexes on live instances
        # (``instance_live_per_host``), which PostgreSQL uses only for a query that names the same states.
        return self.filter(state__in=LIVE_STATES)


class Instance(models.Model):
    """A VM requested by a user in a project. Size is copied from the type so that later changes to the
    type do not change running VMs (or the quota they count)."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=63)
    project = models.ForeignKey("accounts.Project", on_delete=models.PROTECT, related_name="instances")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="instances"
    )
    image = models.ForeignKey("marketplace.Image", on_delete=models.PROTECT, related_name="instances")
    image_identifier = models.CharField(max_length=27)
    instance_type = models.ForeignKey(InstanceType, on_delete=models.PROTECT, related_name="instances")
    vcpus = models.PositiveIntegerField()
    ram_mib = models.PositiveIntegerField()
    root_gib = models.PositiveIntegerField()
    swap_mib = models.PositiveIntegerField(default=0)
    volatile_gib = models.PositiveIntegerField(default=0)
    host = models.ForeignKey(Host, null=True, blank=True, on_delete=models.PROTECT, related_name="instances")
    network = models.CharField(max_length=10, choices=NetworkKind.choices)
    state = models.CharField(max_length=12, choices=InstanceState.choices, default=InstanceState.PENDING)
    state_message = models.TextField(blank=True)
    ssh_keys = models.JSONField(default=list, blank=True, help_text="The public key lines given to the VM.")
    user_data = models.TextField(blank=True)
    policy_warnings = models.JSONField(default=list, blank=True)
    allowed_by = models.JSONField(
        default=list,
        blank=True,
        help_text="The Marketplace entries ({endorser, created}) whose endorsements allowed the image at the moment "
        "of use: at the request, then again when the worker used the checked bytes.",
    )
    # The latest CPU sample the host's worker took (libvirt's cumulative CPU time of the domain, and when), and the
    # CPU use between it and the sample before: what the dashboard shows as "CPU % now" (compute/stats.py).
    cpu_time_ns = models.BigIntegerField(null=True, blank=True)
    cpu_sampled_at = models.DateTimeField(null=True, blank=True)
    cpu_percent = models.FloatField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    objects = InstanceQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [
            models.Index(fields=["project", "state"], name="instance_project_state"),
            models.Index(fields=["host", "state"], name="instance_host_state"),
            # Listings are newest first: a page is read off this index when most instances are visible.
            models.Index(fields=["-created", "-id"], name="instance_newest_first"),
            # What placement sums per host: the live instances' size (PostgreSQL reads it from the index alone).
            models.Index(
                fields=["host"],
                include=["vcpus", "ram_mib"],
                condition=Q(state__in=LIVE_STATES),
                name="instance_live_per_host",
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(vcpus__gt=0) & Q(ram_mib__gt=0), name="instance_has_size"),
            models.CheckConstraint(
                condition=Q(state__in=[s.value for s in InstanceState]), name="instance_state_known"
            ),
            # Once placed, an instance has a host until it ends.
            models.CheckConstraint(
                condition=Q(state__in=["pending", "terminated", "error"]) | Q(host__isnull=False),
                name="instance_placed_has_host",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.uuid})"

    @property
    def is_live(self) -> bool:
        return self.state != InstanceState.TERMINATED


class UsageRecord(models.Model):
    """A stretch of time an instance was seen running, at the size it had: ``start`` to ``end``.

    One row per uninterrupted stretch, extended by each reconciliation run that sees the instance running
    again (rather than one row per run or per minute): a month of a running VM is one row, and a period's
    vCPU-hours are one ``SUM`` of the overlap times ``vcpus``. Extending ``end`` to "now" is idempotent, so
    two runs in the same minute count that minute once."""

    project = models.ForeignKey("accounts.Project", on_delete=models.PROTECT, related_name="usage_records")
    instance = models.ForeignKey(Instance, on_delete=models.PROTECT, related_name="usage_records")
    start = models.DateTimeField()
    end = models.DateTimeField()
    vcpus = models.PositiveIntegerField()
    ram_mib = models.PositiveIntegerField()

    class Meta:
        ordering = ["start", "pk"]
        indexes = [
            models.Index(fields=["project", "start", "end"], name="usage_project_period"),
            models.Index(fields=["instance", "end"], name="usage_instance_latest"),
        ]
        constraints = [models.CheckConstraint(condition=Q(end__gte=F("start")), name="usage_ends_after_start")]

    def __str__(self) -> str:
        return f"{self.instance_id} {self.start:%Y-%m-%d %H:%M}–{self.end:%H:%M}"


class AttachmentState(models.TextChoices):
    ATTACHING = "attaching"
    ATTACHED = "attached"
    DETACHING = "detaching"


class Attachment(models.Model):
    """A storage volume plugged into an instance as ``device`` (vdb, vdc, …). Storage knows the volume only by
    its UUID and the instance only as a holder string (DESIGN §1); this row is compute's side of it.

    The constraints make device naming and attaching race-free: one device name per instance, a volume once per
    instance, and a writable volume (persistent or volatile) in one instance at a time."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="attachments")
    volume_uuid = models.UUIDField()
    device = models.CharField(max_length=8)
    read_only = models.BooleanField(default=False, help_text="A static volume: read-only, may be in many instances.")
    state = models.CharField(max_length=10, choices=AttachmentState.choices, default=AttachmentState.ATTACHING)
    state_message = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["instance", "device"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "device"], name="attachment_device_unique_per_instance"),
            models.UniqueConstraint(fields=["instance", "volume_uuid"], name="attachment_volume_once_per_instance"),
            models.UniqueConstraint(
                fields=["volume_uuid"], condition=Q(read_only=False), name="attachment_writable_volume_once"
            ),
            models.CheckConstraint(
                condition=Q(state__in=[s.value for s in AttachmentState]), name="attachment_state_known"
            ),
        ]
        indexes = [models.Index(fields=["state", "updated"], name="attachment_state_updated")]

    def __str__(self) -> str:
        return f"{self.volume_uuid} as {self.device} of {self.instance_id}"


class TrustNotice(models.Model):
    """What one owner was told when an image their VMs run from turned from allowed to denied: one per owner and
    trust change (the Marketplace's ``TrustChange``), mailed and shown on their dashboard until dismissed."""

    change = models.ForeignKey("marketplace.TrustChange", on_delete=models.PROTECT, related_name="notices")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="trust_notices")
    image_identifier = models.CharField(max_length=27)
    message = models.TextField()
    instances = models.JSONField(help_text="The owner's VMs running from the image then: [{id, name}].")
    created = models.DateTimeField(auto_now_add=True)
    dismissed = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [models.UniqueConstraint(fields=["change", "user"], name="trust_notice_once_per_owner")]
        indexes = [models.Index(fields=["user"], condition=Q(dismissed__isnull=True), name="trust_notice_open")]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.image_identifier}"


class PortTranslation(models.Model):
    """A front-end port forwarded to a port of a VM on the ``local`` network (StratusLab's "port translation"): new
    connections to ``front_address:front_port`` go to the VM's lease address at ``guest_port``. Reserved with the
    VM, deleted when it ends. The unique constraint makes a front-end port given twice impossible."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="port_translations")
    service = models.CharField(max_length=20, help_text="What the guest port serves: ssh, http, … (for links).")
    guest_port = models.PositiveIntegerField()
    front_address = models.GenericIPAddressField(protocol="IPv4", help_text="Where the DNAT rule listens.")
    front_port = models.PositiveIntegerField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["instance", "guest_port"]
        constraints = [
            models.UniqueConstraint(fields=["front_address", "front_port"], name="port_translation_front_unique"),
            models.UniqueConstraint(fields=["instance", "guest_port"], name="port_translation_once_per_guest_port"),
            models.CheckConstraint(
                condition=Q(guest_port__gte=1, guest_port__lte=65535) & Q(front_port__gte=1, front_port__lte=65535),
                name="port_translation_ports_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.front_address}:{self.front_port} → {self.instance_id}:{self.guest_port}"


class FirewallProtocol(models.TextChoices):
    TCP = "tcp"
    UDP = "udp"
    ICMP = "icmp"


class FirewallRule(models.Model):
    """New connections a VM lets in: ``protocol`` to ``port`` (none for icmp: every type) from ``source`` (CIDR).
    A VM gets its image's ``inbound-port``/``icmp`` rules when requested (``origin`` image); its owners add and
    delete rules (``origin`` user) within the site's ``FIREWALL_USER_PORTS``. Everything else new is dropped."""

    class Origin(models.TextChoices):
        IMAGE = "image"
        USER = "user"

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="firewall_rules")
    protocol = models.CharField(max_length=4, choices=FirewallProtocol.choices)
    port = models.PositiveIntegerField(null=True, blank=True)
    source = models.CharField(max_length=18, default="0.0.0.0/0", help_text="IPv4 CIDR the connections come from.")
    origin = models.CharField(max_length=5, choices=Origin.choices, default=Origin.USER)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["instance", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["instance", "protocol", "port", "source"],
                name="firewall_rule_once_per_instance",
            ),
            models.CheckConstraint(
                condition=(Q(protocol="icmp") & Q(port__isnull=True))
                | (Q(protocol__in=["tcp", "udp"]) & Q(port__gte=1, port__lte=65535)),
                name="firewall_rule_port_fits_protocol",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.protocol}/{self.port or '*'} from {self.source} to {self.instance_id}"
