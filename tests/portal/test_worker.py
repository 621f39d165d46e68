"""End to end: a real worker process executes tasks sent by the web process."""

from __future__ import annotations

import pytest

from portal.tasks import ping

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_ping_sent_from_the_web_process_is_answered_by_the_worker(celery_worker_process, client):
    response = client.get("/healthz", {"worker": "1"})
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["worker"]["detail"].startswith("answered by test-worker@")


def test_ping_task_returns_the_worker_hostname(celery_worker_process):
    answer = ping.delay(sent_at="now").get(timeout=30)
    assert answer["pong"] == "ok"
    assert answer["worker"].startswith("test-worker@")
    assert answer["sent_at"] == "now"


def test_ping_task_body_runs_without_a_worker():
    answer = ping.apply(kwargs={"sent_at": "x"}).get()
    assert answer["pong"] == "ok"
