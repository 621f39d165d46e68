from __future__ import annotations

from django.apps import AppConfig


class StorageConfig(AppConfig):
    name = "storage"
    verbose_name = "Storage"

    def ready(self) -> None:
        from accounts.quotas import register_usage_counter
        from storage import quota_counters

        register_usage_counter("volumes", quota_counters.volumes)
        register_usage_counter("volume_gib", quota_counters.volume_gib)

        from marketplace import usage
        from storage.selectors import StaticVolumeUses

        usage.register(StaticVolumeUses())
