"""Thin Celery tasks of storage, on ``STORAGE_QUEUE`` (``default`` unless the site runs its storage worker
apart): make and remove volumes on their backends, and put tgt's targets back after a tgtd restart. Each takes
ids, re-reads the row and returns early when the work is done; a transient failure is retried with backoff, and
one that stays (or any permanent one) leaves the volume in ``error`` with the message."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings

from core.errors import ApplicationError, TransientError
from core.workflow import task
from storage import services

logger = logging.getLogger(__name__)


def _run_step(task_: Any, volume_id: int, step: Callable[..., Any]) -> Any:
    try:
        volume = step(volume_id=volume_id)
    except TransientError as exc:
        if task_.request.retries >= task_.max_retries:
            services.volume_fail(volume_id=volume_id, message=f"{task_.name}: {exc} (gave up after retries)")
            return None
        raise
    except ApplicationError as exc:  # already recorded on the volume
        return {"volume": volume_id, "state": "error", "message": exc.message}
    except Exception as exc:
        logger.exception("%s failed for volume %s", task_.name, volume_id)
        services.volume_fail(volume_id=volume_id, message=f"{task_.name}: {exc}")
        return None
    return {"volume": volume_id, "state": volume.state}


@task("storage.volume_create", bind=True)
def volume_create(self: Any, volume_id: int) -> Any:
    return _run_step(self, volume_id, services.volume_provision)


@task("storage.volume_delete", bind=True)
def volume_delete(self: Any, volume_id: int) -> Any:
    return _run_step(self, volume_id, services.volume_destroy)


@task("storage.reconcile")
def reconcile() -> dict[str, list[str]]:
    """Periodic (STORAGE_RECONCILE_SECONDS): iSCSI targets missing from tgtd are made again from the database."""
    if "iscsi" not in settings.STORAGE_BACKENDS:
        return {"restored": [], "failed": [], "unknown": []}
    return services.iscsi_reconcile()
