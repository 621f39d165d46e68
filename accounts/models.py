"""Accounts data: registration requests, projects with members and quotas, SSH keys, API token names.

The user model is Django's ``auth.User``; everything here sits beside it.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower

# The resources a project's quota limits, in the order they are shown.
QUOTA_RESOURCES = ("instances", "vcpus", "ram_mib", "volume_gib", "volumes", "public_ips")


class RegistrationRequest(models.Model):
    """Someone asking for an account. The password is kept only hashed, and only until the decision."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"

    username = models.CharField(max_length=20)
    email = models.EmailField()
    first_name = models.CharField(max_length=150)
    last_name = models.CharField(max_length=150)
    # Django's hash (for a local account) and an LDAP ``{SSHA}`` hash (for the directory entry), both
    # made from the password at request time; both are blanked once the request is decided.
    password_hash = models.CharField(max_length=256, blank=True)
    ldap_password_hash = models.CharField(max_length=256, blank=True)
    dn = models.CharField("X.509 DN", max_length=500, blank=True)
    message = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    created = models.DateTimeField(auto_now_add=True)
    # When the applicant opened the mailed link and confirmed the address; approval waits for it.
    email_confirmed = models.DateTimeField(null=True, blank=True)
    decided = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.TextField(blank=True)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="registration"
    )

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.UniqueConstraint(
                Lower("username"), condition=Q(status="pending"), name="one_pending_request_per_username"
            ),
            # An e-mail names one person: two pending requests never share one (accounts.emails).
            models.UniqueConstraint(
                Lower("email"), condition=Q(status="pending"), name="one_pending_request_per_email"
            ),
        ]

    def __str__(self) -> str:
        return f"registration of {self.username} ({self.status})"


class Project(models.Model):
    """A group of users sharing resources and one quota. A personal project belongs to one user."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    personal_owner = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="personal_project"
    )
    created = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="projects")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        MANAGER = "manager"
        MEMBER = "member"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "user__username"]
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="one_membership_per_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"


class Quota(models.Model):
    """The limits of one project. Its row is the lock every reservation against the project takes."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, primary_key=True, related_name="quota")
    instances = models.PositiveIntegerField()
    vcpus = models.PositiveIntegerField("vCPUs")
    ram_mib = models.PositiveIntegerField("RAM MiB")
    volume_gib = models.PositiveIntegerField("volume GiB")
    volumes = models.PositiveIntegerField()
    public_ips = models.PositiveIntegerField("public IPs")

    def __str__(self) -> str:
        return f"quota of {self.project}"

    def limits(self) -> dict[str, int]:
        return {resource: getattr(self, resource) for resource in QUOTA_RESOURCES}


class QuotaHold(models.Model):
    """Quota set aside for something that does not exist as a counted row yet (a reservation ledger).

    A hold counts as usage until it is released. Callers that create their resource row in the same
    transaction as the check do not need one (``quota_reserve(within=…)``)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="quota_holds")
    holder = models.CharField(max_length=200, help_text="what the quota is held for, e.g. compute.instance:42")
    instances = models.PositiveIntegerField(default=0)
    vcpus = models.PositiveIntegerField(default=0)
    ram_mib = models.PositiveIntegerField(default=0)
    volume_gib = models.PositiveIntegerField(default=0)
    volumes = models.PositiveIntegerField(default=0)
    public_ips = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]

    def __str__(self) -> str:
        return f"hold for {self.holder} in {self.project}"


class SshKey(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ssh_keys")
    name = models.CharField(max_length=100)
    # Normalised ``<type> <base64>`` plus the comment, as OpenSSH writes it.
    public_key = models.TextField()
    key_type = models.CharField(max_length=50)
    bits = models.PositiveIntegerField()
    fingerprint = models.CharField(max_length=100, help_text="SHA256:… as ssh-keygen -l prints it")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["user", "name"], name="ssh_key_name_unique_per_user"),
            models.UniqueConstraint(fields=["user", "fingerprint"], name="ssh_key_unique_per_user"),
        ]
        verbose_name = "SSH key"

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint})"


class ApiToken(models.Model):
    """The name of a knox token and a stable id to revoke it by; knox keeps the hashed token itself."""

    token = models.OneToOneField(settings.KNOX_TOKEN_MODEL, on_delete=models.CASCADE, related_name="label")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} of {self.user}"
