"""Thin Celery tasks of compute: the steps of ``compute.execution`` on the host's queue, and reconciliation.

Polling steps retry themselves with a countdown (bounded); any step that fails for good (a permanent error,
or transient ones past the retries) puts the instance in ``error`` with the message."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from compute import (  # noqa: F401 - worker: connects the host-queue signal
    access,
    attachments,
    execution,
    reconciliation,
    stats,
    worker,
)
from core.errors import Conflict, TransientError
from core.workflow import task

logger = logging.getLogger(__name__)

# The steps' return values are read by no one (their outcome is the instance's state): not stored in the result
# backend, which saves a write to it per step.
STEP = {"bind": True, "ignore_result": True}
# Polling for a domain to run or stop: every POLL_SECONDS, at most POLL_TIMES (two minutes).
POLL_SECONDS = 2
POLL_TIMES = 60


def _run_step(task_: Any, instance_id: int, step: Callable[[int], Any]) -> Any:
    try:
        return step(instance_id)
    except Conflict as exc:
        # The instance moved on while this step ran (another run of the same step after a resume, or the user
        # acted): that run or action owns it now, so this one is not a failure of the instance.
        logger.info("%s for instance %s stopped: %s", task_.name, instance_id, exc)
        return None
    except TransientError as exc:
        if task_.request.retries >= task_.max_retries:
            execution.instance_fail(instance_id, message=f"{task_.name}: {exc} (gave up after retries)")
            return None
        raise
    except Exception as exc:
        logger.exception("%s failed for instance %s", task_.name, instance_id)
        execution.instance_fail(instance_id, message=f"{task_.name}: {exc}")
        return None


def _poll(task_: Any, instance_id: int, step: Callable[[int], Any], what: str) -> Any:
    done = _run_step(task_, instance_id, step)
    if done is False:
        if task_.request.retries >= POLL_TIMES:
            execution.instance_fail(instance_id, message=f"the domain did not {what} in time")
            return None
        raise task_.retry(countdown=POLL_SECONDS, max_retries=POLL_TIMES + 1)
    return done


@task(execution.PREPARE, **STEP)
def instance_prepare(self: Any, instance_id: int) -> Any:
    return _run_step(self, instance_id, execution.instance_prepare)


@task(execution.BOOT, **STEP)
def instance_boot(self: Any, instance_id: int) -> Any:
    return _run_step(self, instance_id, execution.instance_boot)


@task(execution.WAIT_RUNNING, **STEP, max_retries=POLL_TIMES + 1)
def instance_wait_running(self: Any, instance_id: int) -> Any:
    return _poll(self, instance_id, execution.instance_wait_running, "start")


def _stop(instance_id: int, *, kill: bool) -> Any:
    if execution.instance_stop_apply(instance_id, kill=kill):
        instance = execution._get(instance_id)
        execution.enqueue(execution.WAIT_STOPPED, instance)
    return True


@task(execution.SHUTDOWN, **STEP)
def instance_shutdown(self: Any, instance_id: int) -> Any:
    return _run_step(self, instance_id, lambda pk: _stop(pk, kill=False))


@task(execution.KILL, **STEP)
def instance_kill(self: Any, instance_id: int) -> Any:
    return _run_step(self, instance_id, lambda pk: _stop(pk, kill=True))


@task(execution.WAIT_STOPPED, **STEP, max_retries=POLL_TIMES + 1)
def instance_wait_stopped(self: Any, instance_id: int) -> Any:
    return _poll(self, instance_id, execution.instance_wait_stopped, "stop")


@task(execution.REBOOT, **STEP)
def instance_reboot(self: Any, instance_id: int) -> Any:
    try:
        return execution.instance_reboot_apply(instance_id)
    except TransientError:
        raise
    except Exception:
        # A refused reboot leaves the instance as it was (it runs, or it has stopped meanwhile).
        logger.exception("reboot of instance %s refused", instance_id)
        return None


@task(execution.TERMINATE, **STEP)
def instance_terminate(self: Any, instance_id: int) -> Any:
    return _run_step(self, instance_id, execution.instance_teardown)


# --- Volumes in instances (compute/attachments.py) -------------------------------------------------------------


def _gave_up(task_: Any, exc: Exception) -> bool:
    """Whether ``exc`` ends the step for good: anything but a transient error, or a transient one past the retries."""
    if not isinstance(exc, TransientError):
        logger.exception("%s failed", task_.name)
        return True
    return task_.request.retries >= task_.max_retries


@task(attachments.ATTACH, bind=True)
def volume_attach(self: Any, attachment_id: int) -> Any:
    """Hot-plug an attachment's disk; a hot-plug that fails for good returns the volume to ``available``."""
    try:
        return attachments.volume_attach_apply(attachment_id)
    except Exception as exc:
        if not _gave_up(self, exc):
            raise
        attachments.attach_settle(attachment_id, ok=False, message=f"the hot-plug failed: {exc}")
        return False


@task(attachments.DETACH, bind=True, max_retries=POLL_TIMES + 1)
def volume_detach(self: Any, attachment_id: int) -> Any:
    """Unplug an attachment's disk, asking again until the guest lets go; a guest that keeps it past the polling
    (or an unplug that fails for good) leaves it attached, the volume ``in-use``, with the reason."""
    try:
        done = attachments.volume_detach_apply(attachment_id)
    except Exception as exc:
        if not _gave_up(self, exc):
            raise
        attachments.volume_detach_restore(attachment_id, message=f"the unplug failed: {exc}")
        return False
    if done:
        return True
    if self.request.retries >= POLL_TIMES:
        attachments.volume_detach_restore(
            attachment_id, message=f"the guest did not release the disk within {POLL_TIMES * POLL_SECONDS} s"
        )
        return False
    raise self.retry(countdown=POLL_SECONDS)


@task(attachments.SETTLE)
def attachments_settle(host_id: int) -> list[dict]:
    """Settle the attachments of one host stuck past the step deadline (sent to its queue by ``compute.reconcile``)."""
    return [vars(settled) for settled in attachments.attachments_settle(host_id=host_id)]


# --- Reconciliation (compute/reconciliation.py) ---------------------------------------------------------------


@task(execution.CONSOLE, max_retries=0)
def instance_console(instance_id: int, max_bytes: int) -> str:
    """The tail of an instance's console log, read on its host for the API waiting on the answer (no retries: the
    caller has given up by then)."""
    return execution.instance_console_tail(instance_id, max_bytes=max_bytes)


@task("compute.host_cpu_sample", max_retries=0)
def host_cpu_sample(host_id: int) -> int:
    """Sample the CPU time of one host's running instances (sent to its queue by ``compute.reconcile``)."""
    return stats.host_cpu_sample(host_id=host_id)


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
        "networks_repaired": report.networks_repaired,
    }


@task("compute.reconcile")
def reconcile() -> int:
    """Periodic (COMPUTE_RECONCILE_SECONDS): one ``compute.host_reconcile`` per enabled host on the host's queue,
    then fail the instances stuck past the deadline. Returns how many instances were failed as stuck."""
    for host in reconciliation.reconcile_hosts():
        host_reconcile.apply_async(kwargs={"host_id": host.pk}, queue=f"host.{host.name}")
        attachments_settle.apply_async(kwargs={"host_id": host.pk}, queue=f"host.{host.name}")
        host_cpu_sample.apply_async(kwargs={"host_id": host.pk}, queue=f"host.{host.name}")
    return reconciliation.stuck_instances_fail()


@task(access.FRONTEND_SYNC)
def frontend_sync() -> dict:
    """On the front end (queue FRONTEND_QUEUE; also periodic): make the nftables table ``ip altostratus`` say what
    the database says (port translations, firewalls); returns what it restored or removed, as JSON."""
    return vars(access.frontend_sync())


@task("compute.quarantine_purge")
def quarantine_purge() -> int:
    """Hourly: delete quarantined root disks older than QUARANTINE_HOURS; returns how many."""
    return reconciliation.quarantine_purge()
