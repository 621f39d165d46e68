"""Worker start-up for compute: the host queues a worker consumes, and the steps a dead worker left behind.

The embedded worker consumes every host's queue (DESIGN §1: ``make run`` runs one worker for everything). With
``WORKER_ALL_HOST_QUEUES`` the worker adds ``host.<name>`` for each registered host when it is ready and then
every ``REFRESH_SECONDS`` (hosts registered later), from the consumer's own timer, as Celery's ``add_consumer``
control command does. Production workers run ``-Q default,host.<name>`` and leave it off.

When a worker is ready it sends again the current step of the instances on the hosts whose queues it consumes
(``execution.steps_resume``): a worker killed mid-step loses its message on the filesystem broker, and Redis
returns it only after its visibility timeout, so without this an instance would wait for the stuck-step
deadline. One worker per host is the design (DESIGN §4), so nothing else is running those steps then."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready
from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)

REFRESH_SECONDS = 2.0
HOST_QUEUE_PREFIX = "host."


def host_queues() -> list[str]:
    from compute.models import Host

    return [f"{HOST_QUEUE_PREFIX}{name}" for name in Host.objects.order_by("pk").values_list("name", flat=True)]


def _consumed(consumer: Any) -> set[str]:
    return {queue.name for queue in consumer.task_consumer.queues} if consumer.task_consumer else set()


def _add_host_queues(consumer: Any) -> None:
    try:
        close_old_connections()
        wanted = host_queues()
    except Exception:  # the database may be restarting: try again at the next tick
        logger.exception("could not list the hosts' queues")
        return
    consuming = _consumed(consumer)
    for name in wanted:
        if name not in consuming:
            logger.info("consuming host queue %s", name)
            consumer.add_task_queue(name)


def _resume_steps(consumer: Any) -> None:
    from compute import execution

    hosts = sorted(q.removeprefix(HOST_QUEUE_PREFIX) for q in _consumed(consumer) if q.startswith(HOST_QUEUE_PREFIX))
    if not hosts:
        return
    try:
        close_old_connections()
        resumed = execution.steps_resume(host_names=hosts)
    except Exception:  # the stuck-step deadline of reconciliation still ends these instances
        logger.exception("could not resume the steps of hosts %s", ", ".join(hosts))
        return
    if resumed:
        logger.info("resumed the steps of %s instances on %s", resumed, ", ".join(hosts))


@worker_ready.connect
def on_worker_ready(sender: Any = None, **_: Any) -> None:
    if sender is None:
        return
    if settings.WORKER_ALL_HOST_QUEUES:
        _add_host_queues(sender)
        sender.timer.call_repeatedly(REFRESH_SECONDS, _add_host_queues, (sender,))
    _resume_steps(sender)
