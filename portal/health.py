"""Reachability checks of the parts the portal depends on, for ``/healthz``."""

from __future__ import annotations

from dataclasses import dataclass

from celery.exceptions import TimeoutError as CeleryTimeout
from django.db import connection
from django.db.utils import Error as DatabaseError
from django.utils import timezone

from portal.celery import app
from portal.tasks import ping


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return Check(False, f"{connection.vendor}: {exc}")
    return Check(True, connection.vendor)


def check_broker(url: str | None = None, timeout: float = 2.0) -> Check:
    """Connect to the broker at ``url`` (default: the configured one)."""
    transport = (url or app.conf.broker_url).split(":", 1)[0]
    try:
        with app.connection_for_write(url) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # kombu raises transport-specific errors; any of them means unreachable
        return Check(False, f"{transport}: {exc}")
    return Check(True, transport)


def check_worker(timeout: float = 5.0) -> Check:
    """Send ``portal.ping`` and wait for a worker to answer it."""
    try:
        result = ping.delay(sent_at=timezone.now().isoformat())
        answer = result.get(timeout=timeout)
    except CeleryTimeout:
        return Check(False, f"no worker answered portal.ping within {timeout:g} s")
    except Exception as exc:  # broker or result backend down
        return Check(False, f"portal.ping could not be sent: {exc}")
    return Check(True, f"answered by {answer['worker']}")
