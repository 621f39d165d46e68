"""The shared workflow core: state transitions as conditional updates, and the house Celery task.

A transition moves one row from one of its allowed states to the next with a single conditional
``UPDATE … WHERE pk = … AND <state> IN (<allowed>)`` that must change exactly one row (STYLE rule 5). Two
requests racing for the same transition cannot both win: the database decides, no lock is held while
deciding, and the loser is told the state it found. The audit entry is written in the same transaction::

    with transaction.atomic():
        registration = transition(
            RegistrationRequest, pk=pk, allowed={"status": ["pending"]}, changes={"status": "approved", …},
            actor=actor, action="accounts.registration.approved", code="registration-decided",
        )

Tasks are declared with :func:`task`, which gives every task the house defaults (STYLE rules 8 and 9):
an explicit name, ``acks_late`` and ``reject_on_worker_lost`` (a worker that dies mid-task gives the
message back to the broker), and a bounded retry with backoff of :class:`~core.errors.TransientError`
only. A task takes ids, re-reads its rows and returns early when its work is already done, so running
it twice is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from celery import shared_task
from django.db import models, transaction
from django.utils import timezone

from core import audit
from core.errors import Conflict, NotFound, TransientError

M = TypeVar("M", bound=models.Model)

# Retry of transient failures: 1 s, 2 s, 4 s … at most 5 minutes apart, at most 8 times (about 10 minutes).
TASK_MAX_RETRIES = 8
TASK_BACKOFF_MAX_SECONDS = 300


def _condition(allowed: Mapping[str, Iterable[Any]]) -> models.Q:
    """``field IN (values)`` for each field; ``None`` among the values also matches NULL."""
    condition = models.Q()
    for field, values in allowed.items():
        values = list(values)
        present = [v for v in values if v is not None]
        clause = models.Q(**{f"{field}__in": present}) if present else models.Q(pk__in=[])
        if len(present) != len(values):
            clause |= models.Q(**{f"{field}__isnull": True})
        condition &= clause
    return condition


def transition(
    model: type[M],
    *,
    pk: Any,
    allowed: Mapping[str, Iterable[Any]],
    changes: Mapping[str, Any],
    actor: Any,
    action: str | None,
    code: str,
    refusal: Callable[[M], str] | None = None,
    details: Mapping[str, Any] | None = None,
    row: M | None = None,
) -> M:
    """Move the row ``pk`` of ``model`` from the ``allowed`` values to ``changes``; returns the changed row.

    Must run inside ``transaction.atomic``. When no row changed: :class:`NotFound` if the row does not exist,
    else :class:`Conflict` with ``code`` and ``refusal(current row)`` as its message (default: the state found;
    the error keeps the API's ``{detail, code}`` shape). With ``action``, an audit entry records the change.

    ``row``: the caller's copy of that row (read earlier, e.g. with its related rows). When the update wins, the
    changes are applied to it and it is returned, instead of reading the row again: for callers whose other
    columns do not change under them (a worker step owns its instance while it is in the step's state)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("transition() must run inside transaction.atomic()")
    if row is not None and row.pk != pk:
        raise ValueError(f"transition(row=…) was given row {row.pk}, not {pk}")
    manager = model._default_manager
    # UPDATE bypasses save(): stamp the auto_now fields (``updated``) as save() would, so "last changed" holds.
    stamps = {f.name: timezone.now() for f in model._meta.concrete_fields if getattr(f, "auto_now", False)}
    changed = manager.filter(_condition(allowed), pk=pk).update(**{**stamps, **changes})
    # A change computed by the database (an F() expression) is read back like the rest of the row.
    if changed == 1 and row is not None and not any(hasattr(v, "resolve_expression") for v in changes.values()):
        for field, value in {**stamps, **changes}.items():
            setattr(row, field, value)
        if action:
            audit.record(actor, action, row, **{**changes, **(details or {})})
        return row
    current = manager.filter(pk=pk).first()
    if current is None:
        raise NotFound(f"No such {model._meta.verbose_name}.")
    if changed != 1:
        found = {field: getattr(current, field) for field in allowed}
        if refusal is not None:
            message = refusal(current)
        else:
            shown = ", ".join(f"{field} {value}" for field, value in found.items())
            message = f"This {model._meta.verbose_name} cannot change now: its {shown}."
        raise Conflict(message, code=code)
    if action:
        audit.record(actor, action, current, **{**changes, **(details or {})})
    return current


def task(name: str, *, max_retries: int = TASK_MAX_RETRIES, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """Declare a Celery task the house way: ``@task("compute.instance_boot")``.

    Defaults: ``acks_late``, ``reject_on_worker_lost``, and retry with exponential backoff (jittered, at most
    ``TASK_BACKOFF_MAX_SECONDS`` apart) of :class:`TransientError` only, at most ``max_retries`` times; any
    other exception fails the task at once. ``options`` go to Celery (``queue``, ``bind``, …)."""
    defaults: dict[str, Any] = {
        "name": name,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "autoretry_for": (TransientError,),
        "retry_backoff": True,
        "retry_backoff_max": TASK_BACKOFF_MAX_SECONDS,
        "retry_jitter": True,
        "max_retries": max_retries,
    }
    return shared_task(**{**defaults, **options})
