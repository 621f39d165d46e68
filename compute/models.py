from __future__ import annotations

from django.db import models
from django.db.models import Q


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
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.name
