"""A worker keeps its database connection from task to task, as a web process does from request to request
(CONN_MAX_AGE), instead of Celery's default of a new connection per task; a connection that died is replaced."""

from __future__ import annotations

import pytest
from celery.fixups.django import DjangoWorkerFixup
from celery.signals import task_postrun, task_prerun
from django.db import connection

from portal.celery import app
from portal.tasks import ping

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker_fixup():
    """Celery's Django fix-up as a worker installs it at start (it closes connections around tasks)."""
    fixup = DjangoWorkerFixup(app)
    fixup.install()
    yield fixup
    for signal, handler in ((task_prerun, fixup.on_task_prerun), (task_postrun, fixup.on_task_postrun)):
        signal.disconnect(handler)


def _task_runs(body):
    """One task as the worker runs it: its signals around its body."""
    task_prerun.send(sender=ping, task_id="t", task=ping, args=(), kwargs={})
    try:
        return body()
    finally:
        task_postrun.send(sender=ping, task_id="t", task=ping, args=(), kwargs={}, retval=None, state="SUCCESS")


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_tasks_in_a_row_use_one_database_connection(worker_fixup, settings):
    assert settings.DATABASES["default"]["CONN_MAX_AGE"] > 0
    pids = {_task_runs(_backend_pid) for _ in range(5)}
    assert len(pids) == 1


def test_a_connection_that_died_between_tasks_is_replaced_at_the_next_task(worker_fixup):
    first = _task_runs(_backend_pid)
    other = connection.copy()  # as a database restart would: the server ends the worker's session
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [first])
    finally:
        other.close()
    second = _task_runs(_backend_pid)
    assert second != first
    assert _task_runs(_backend_pid) == second
