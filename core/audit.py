"""The audit log service shared by all apps: ``audit.record(actor, action, obj, **details)``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.views.debug import SafeExceptionReporterFilter

from core.models import AuditEntry

# Django's own rules for what looks secret (API, AUTH, TOKEN, KEY, SECRET, PASS, SIGNATURE, …).
_secret_filter = SafeExceptionReporterFilter()


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def blank_secrets(details: dict[str, Any]) -> dict[str, Any]:
    """Return ``details`` made JSON-safe, with every value under a secret-looking key blanked."""
    return {key: _secret_filter.cleanse_setting(key, _json_safe(value)) for key, value in details.items()}


def record(actor: Any, action: str, obj: models.Model | None = None, **details: Any) -> AuditEntry:
    """Write one audit entry. ``action`` is dotted (``compute.instance.started``); ``actor`` may be None
    (the system) or a user. Call inside the transaction of the change so both commit or neither does."""
    user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditEntry.objects.create(
        actor=user,
        actor_repr=user.get_username() if user else "",
        action=action,
        content_type=ContentType.objects.get_for_model(obj) if obj is not None else None,
        object_id=str(obj.pk) if obj is not None else "",
        object_repr=str(obj)[:300] if obj is not None else "",
        details=blank_secrets(details),
    )


def record_many(actor: Any, action: str, changes: Iterable[tuple[models.Model, dict[str, Any]]]) -> list[AuditEntry]:
    """``record`` of many objects by one actor and action (each with its details), in one statement: a bulk
    change's audit rows. Call inside the transaction of the change."""
    user = actor if getattr(actor, "is_authenticated", False) else None
    rows = [
        AuditEntry(
            actor=user,
            actor_repr=user.get_username() if user else "",
            action=action,
            content_type=ContentType.objects.get_for_model(obj),
            object_id=str(obj.pk),
            object_repr=str(obj)[:300],
            details=blank_secrets(details),
        )
        for obj, details in changes
    ]
    return AuditEntry.objects.bulk_create(rows)
