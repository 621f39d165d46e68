from __future__ import annotations

from django.apps import AppConfig


class ComputeConfig(AppConfig):
    name = "compute"
    verbose_name = "Compute"

    def ready(self) -> None:
        from accounts.quotas import register_usage_counter, register_usage_provider
        from compute import quota_counters

        # Instances, vCPUs and RAM from one query over the live instances (a reservation asks for all three).
        register_usage_provider(tuple(quota_counters.LIVE_AGGREGATES), quota_counters.live_usage)
        register_usage_counter("public_ips", quota_counters.public_ips)

        from compute import trust
        from marketplace import usage
        from marketplace.signals import image_trust_lost

        usage.register(trust.InstanceUses())
        image_trust_lost.connect(trust.image_trust_lost_notify, dispatch_uid="compute.trust.notify")
