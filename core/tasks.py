from __future__ import annotations

from core.idempotency import idempotency_records_purge
from core.workflow import task


@task("core.idempotency_purge")
def idempotency_purge() -> int:
    """Forget Idempotency-Key records past their keeping time."""
    return idempotency_records_purge()
