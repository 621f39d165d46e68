"""Compute background tasks: thin wrappers around services."""

from __future__ import annotations

from compute import reconciliation
from core.workflow import task

# Reconciliation (compute/reconciliation.py). The worker steps' tasks go above this line.


@task("compute.host_reconcile")
def host_reconcile(host_id: int) -> dict:
    """Reconcile one host (sent to its queue ``host.<name>``); returns what changed, as JSON."""
    report = reconciliation.host_reconcile(host_id=host_id)
    return {
        "host": report.host,
        "state": report.state,
        "changes": [vars(change) for change in report.changes],
        "skipped": report.skipped,
        "unknown_domains": report.unknown_domains,
        "usage_recorded": report.usage_recorded,
    }


@task("compute.reconcile")
def reconcile() -> int:
    """Periodic (COMPUTE_RECONCILE_SECONDS): one ``compute.host_reconcile`` per enabled host on the host's queue,
    then fail the instances stuck past the deadline. Returns how many instances were failed as stuck."""
    for host in reconciliation.reconcile_hosts():
        host_reconcile.apply_async(kwargs={"host_id": host.pk}, queue=f"host.{host.name}")
    return reconciliation.stuck_instances_fail()


@task("compute.quarantine_purge")
def quarantine_purge() -> int:
    """Hourly: delete quarantined root disks older than QUARANTINE_HOURS; returns how many."""
    return reconciliation.quarantine_purge()
