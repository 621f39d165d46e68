"""The embedded worker consumes every host's queue (DESIGN §1: ``make run`` runs one worker for everything).

With ``WORKER_ALL_HOST_QUEUES`` the worker adds ``host.<name>`` for each registered host when it is ready and
then every ``REFRESH_SECONDS`` (hosts registered later), from the consumer's own timer, as Celery's
``add_consumer`` control command does. Production workers run ``-Q default,host.<name>`` and leave it off."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready
from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)

REFRESH_SECONDS = 2.0


def host_queues() -> list[str]:
    from compute.models import Host

    return [f"host.{name}" for name in Host.objects.order_by("pk").values_list("name", flat=True)]


def _add_host_queues(consumer: Any) -> None:
    try:
        close_old_connections()
        wanted = host_queues()
    except Exception:  # the database may be restarting: try again at the next tick
        logger.exception("could not list the hosts' queues")
        return
    consuming = {queue.name for queue in consumer.task_consumer.queues} if consumer.task_consumer else set()
    for name in wanted:
        if name not in consuming:
            logger.info("consuming host queue %s", name)
            consumer.add_task_queue(name)


@worker_ready.connect
def consume_every_host_queue(sender: Any = None, **_: Any) -> None:
    if not settings.WORKER_ALL_HOST_QUEUES or sender is None:
        return
    _add_host_queues(sender)
    sender.timer.call_repeatedly(REFRESH_SECONDS, _add_host_queues, (sender,))
