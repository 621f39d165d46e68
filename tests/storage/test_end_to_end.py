"""End to end through the API alone, with a real worker process: a volume requested → ``available`` (its qcow2
file made by the worker with the real qemu-img), deleted → ``deleted`` (the file gone). The worker reads the
default settings of the test suite (``STORAGE_FILE_DIR`` under ``var/test``); the test only asks the API."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from django.conf import settings

from storage.models import Volume

pytestmark = [
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
]

DEADLINE_SECONDS = 60


def wait_for(client, url: str, state: str) -> dict:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        body = client.get(url).json()
        if body["state"] == state or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def test_a_volume_is_made_and_deleted_by_the_worker(celery_worker_process, api_as, owner, project):
    client = api_as(owner)
    made = client.post(
        "/api/v1/storage/volumes/",
        {"name": "e2e", "size_gib": 1, "project": project.pk},
        format="json",
        HTTP_IDEMPOTENCY_KEY="e2e-volume",
    )
    assert made.status_code == 202, made.json()
    url = f"/api/v1/storage/volumes/{made.json()['id']}/"

    body = wait_for(client, url, "available")
    assert body["state"] == "available", body
    path = Path(Volume.objects.get(uuid=body["id"]).path)
    assert path.exists() and path.parent == settings.STORAGE_FILE_DIR  # the worker's directory

    assert client.delete(url).status_code == 202
    body = wait_for(client, url, "deleted")
    assert body["state"] == "deleted", body
    assert not path.exists()
