from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The shared kernel under every app: the application error type and the audit log."""

    name = "core"
    verbose_name = "Core"
