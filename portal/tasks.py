from __future__ import annotations

from django.utils import timezone

from core.workflow import task


@task("portal.ping", bind=True, max_retries=0)
def ping(self, sent_at: str | None = None) -> dict[str, str | None]:
    """Answer from the worker: proves a task sent by the web process reached a running worker."""
    return {
        "pong": "ok",
        "worker": self.request.hostname,
        "sent_at": sent_at,
        "answered_at": timezone.now().isoformat(),
    }
