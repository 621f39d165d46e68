from __future__ import annotations

from celery import shared_task
from django.utils import timezone


@shared_task(name="portal.ping", bind=True)
def ping(self, sent_at: str | None = None) -> dict[str, str | None]:
    """Answer from the worker: proves a task sent by the web process reached a running worker."""
    return {
        "pong": "ok",
        "worker": self.request.hostname,
        "sent_at": sent_at,
        "answered_at": timezone.now().isoformat(),
    }
