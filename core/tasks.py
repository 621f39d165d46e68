from __future__ import annotations

from celery import shared_task

from core.idempotency import idempotency_records_purge


@shared_task(name="core.idempotency_purge", acks_late=True, reject_on_worker_lost=True)
def idempotency_purge() -> int:
    """Forget Idempotency-Key records past their keeping time."""
    return idempotency_records_purge()
