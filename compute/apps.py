from __future__ import annotations

from django.apps import AppConfig


class ComputeConfig(AppConfig):
    name = "compute"
    verbose_name = "Compute"

    def ready(self) -> None:
        from accounts.quotas import register_usage_counter
        from compute import quota_counters

        register_usage_counter("instances", quota_counters.instances)
        register_usage_counter("vcpus", quota_counters.vcpus)
        register_usage_counter("ram_mib", quota_counters.ram_mib)
        register_usage_counter("public_ips", quota_counters.public_ips)

        from compute import trust
        from marketplace import usage
        from marketplace.signals import image_trust_lost

        usage.register(trust.InstanceUses())
        image_trust_lost.connect(trust.image_trust_lost_notify, dispatch_uid="compute.trust.notify")
