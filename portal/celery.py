"""The Celery application: configured from Django settings (``CELERY_*``), tasks found per app."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun
from kombu.transport import TRANSPORT_ALIASES

# filesystem:// (the embedded broker) writes its message files atomically: see portal/broker.py.
TRANSPORT_ALIASES["filesystem"] = "portal.broker:Transport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _database_connections_tidy(sender: Any = None, **_: Any) -> None:
    """Around each task, what Django does around each request: connections past ``CONN_MAX_AGE``, or broken, are
    closed (a healthy one is kept, and checked before its next use when ``CONN_HEALTH_CHECKS`` is on). Celery's
    own fix-up would close them all every time (see ``CELERY_DB_REUSE_MAX`` in portal/settings.py). Not for a task
    run eagerly, inside its caller's transaction."""
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
