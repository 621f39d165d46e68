"""Fixtures for the whole suite: the cast of users, API clients and a real Celery worker.

The cast: ``owner`` manages the shared ``project`` (and owns what the tests give them), ``member`` is a plain
member of it, ``outsider`` is signed in but in no project of theirs, ``staff`` is a site administrator who is
not in the project. Permission matrices say (method, URL, role) for these four, and ``anonymous``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import Project
from accounts.services import project_create, project_member_add
from tests.factories import StaffFactory, UserFactory

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Rate-limit counters live in the cache: each test starts with none."""
    cache.clear()


@pytest.fixture
def owner(db):
    return UserFactory(username="owner")


@pytest.fixture
def outsider(db):
    return UserFactory(username="outsider")


@pytest.fixture
def staff(db):
    return StaffFactory(username="staff")


@pytest.fixture
def member(db):
    """A plain member (role ``member``, not manager) of ``project``; request ``project`` for the membership."""
    return UserFactory(username="member")


@pytest.fixture
def project(owner, member, staff) -> Project:
    """The shared project ``climate``, made by ``staff``: ``owner`` manages it, ``member`` is a plain member."""
    project = project_create(actor=staff, name="climate", manager=owner)
    project_member_add(actor=owner, project=project, user=member, role="member")
    return project


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def api_as(api):
    """``api_as(user)``: the API client logged in (session) as ``user``."""

    def login(user) -> APIClient:
        api.force_authenticate(user=user)
        return api

    return login


def _test_database_url() -> str:
    """The URL of the database this test session created, for processes started by tests."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}/{db['NAME']}"


class WorkerProcess:
    """A real ``celery worker`` process on the configured broker, against the test database, logging to ``log``.

    ``queues`` are its ``-Q``; ``env`` adds to its environment (``WORKER_ALL_HOST_QUEUES``, ``IMAGE_CACHE_DIR``…).
    It may be killed (SIGKILL) and started again with the same command line."""

    def __init__(self, name: str, *, queues: str | None = None, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = settings.VAR_DIR / f"{name}.log"
        self.argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "--pool=solo",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            f"{name}@%h",
            *(["-Q", queues] if queues else []),
        ]
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "ALTO_VAR_DIR": str(settings.VAR_DIR),
            "DATABASE_URL": _test_database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND,
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> WorkerProcess:
        """Start it (appending to its log) and wait until it says it is ready."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while "ready." not in self.log_text()[offset:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker {self.name} did not start:\n{self.log_text()[offset:][-4000:]}")
            time.sleep(0.2)
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the worker dies at once, in the middle of whatever it does."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=20)

    def stop(self) -> None:
        """A warm shutdown (SIGTERM), SIGKILL if it does not end in 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)


@pytest.fixture(scope="session")
def _session_worker(django_db_setup, django_db_blocker) -> Iterator[WorkerProcess]:
    """The suite's shared worker (not started yet): every queue, host queues included."""
    worker = WorkerProcess("test-worker", env={"WORKER_ALL_HOST_QUEUES": "1"})
    worker.log.unlink(missing_ok=True)
    yield worker
    worker.stop()


@pytest.fixture
def celery_worker_process(_session_worker) -> Iterator[subprocess.Popen]:
    """A real ``celery worker`` process on the configured broker, against the test database, that consumes every
    queue; started for the test and stopped after it. (Not kept across tests: a transactional test's flush makes
    the content types again with new ids, and a worker that remembered the old ones would fail to write its
    audit entries.)"""
    if not _session_worker.running:
        _session_worker.start()
    assert _session_worker.process is not None
    yield _session_worker.process
    _session_worker.stop()


@pytest.fixture
def celery_workers(_session_worker) -> Iterator[Callable[..., WorkerProcess]]:
    """``celery_workers(name, queues=…, env=…)``: start a worker process of the test's own (stopped at its end).

    The shared worker is stopped first, so that only the test's workers take the messages of the test's hosts."""
    _session_worker.stop()
    started: list[WorkerProcess] = []

    def start(name: str, *, queues: str | None = None, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(name, queues=queues, env=env)
        worker.log.unlink(missing_ok=True)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()


def pytest_collection_modifyitems(config, items):
    if connection.vendor != "postgresql" and "postgresql" not in settings.DATABASES["default"]["ENGINE"]:
        skip = pytest.mark.skip(reason="needs PostgreSQL: run with DATABASE_URL=postgres://… (make test does)")
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)


from tests.browser import browser, page  # noqa: E402,F401 - fixtures for browser tests
