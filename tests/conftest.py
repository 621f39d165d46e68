"""Fixtures for the whole suite: the cast of users, API clients and a real Celery worker.

The cast: ``owner`` manages the shared ``project`` (and owns what the tests give them), ``member`` is a plain
member of it, ``outsider`` is signed in but in no project of theirs, ``staff`` is a site administrator who is
not in the project. Permission matrices say (method, URL, role) for these four, and ``anonymous``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
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


def worker_process_start(*, log_path: Path, hostname: str = "test-worker@%h") -> subprocess.Popen:
    """Start a real ``celery worker`` process on the configured broker, against the test database (the caller's
    session must have created it), consuming every host queue; returns once it is ready. Its output goes to
    ``log_path``."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "ALTO_VAR_DIR": str(settings.VAR_DIR),
        "DATABASE_URL": _test_database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND,
        "WORKER_ALL_HOST_QUEUES": "1",
    }
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
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
                hostname,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while "ready." not in log_path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the test worker did not start:\n" + log_path.read_text())
        time.sleep(0.2)
    return process


@pytest.fixture
def celery_worker_process(django_db_setup, django_db_blocker) -> Iterator[subprocess.Popen]:
    """A real ``celery worker`` process on the configured broker, against the test database: one per test, since
    the flush that ends each transactional test recreates the content types (new ids) that a worker caches for
    the audit log; a worker kept across tests would write audit entries naming ones that no longer exist."""
    process = worker_process_start(log_path=settings.VAR_DIR / "test-worker.log")
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def pytest_collection_modifyitems(config, items):
    if connection.vendor != "postgresql" and "postgresql" not in settings.DATABASES["default"]["ENGINE"]:
        skip = pytest.mark.skip(reason="needs PostgreSQL: run with DATABASE_URL=postgres://… (make test does)")
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)


from tests.browser import browser, page  # noqa: E402,F401 - fixtures for browser tests
