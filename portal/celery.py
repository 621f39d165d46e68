"""The Celery application: configured from Django settings (``CELERY_*``), tasks found per app."""

from __future__ import annotations

import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

# filesystem:// (the embedded broker) writes its message files atomically: see portal/broker.py.
TRANSPORT_ALIASES["filesystem"] = "portal.broker:Transport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
