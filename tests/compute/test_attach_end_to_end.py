"""Volumes end to end through the API alone, with a real worker process: a volume made through the storage API is
named in a VM request (attached from boot, beside the volatile disk), detached, attached again, and released when
the VM is terminated (available with its data; the volatile disk destroyed)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from django.conf import settings

from storage.models import Volume
from tests.compute.test_end_to_end import DEADLINE_SECONDS, _wait_for, worker_host  # noqa: F401

pytestmark = [
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
]


def _volume_in(client, volume_id: str, state: str) -> dict:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        shown = client.get(f"/api/v1/storage/volumes/{volume_id}/").json()
        if shown["state"] in (state, "error") or time.monotonic() > deadline:
            log = (settings.VAR_DIR / "test-worker.log").read_text()[-4000:]
            assert shown["state"] == state, f"{shown}\n--- worker log ---\n{log}"
            return shown
        time.sleep(0.3)


def test_a_volume_follows_its_vm_through_request_detach_attach_and_terminate(
    celery_worker_process,
    api_as,
    owner,
    project,
    types,
    networks,
    served_image,  # noqa: F811 - the fixtures imported above
    worker_host,  # noqa: F811
):
    client = api_as(owner)
    made = client.post(
        "/api/v1/storage/volumes/", {"name": "results", "size_gib": 1, "project": project.pk}, format="json"
    )
    assert made.status_code in (201, 202), made.json()
    volume_id = made.json()["id"]
    _volume_in(client, volume_id, "available")
    path = Path(Volume.objects.get(uuid=volume_id).path)

    requested = client.post(
        "/api/v1/compute/instances/",
        {
            "name": "e2e-volumes",
            "image": served_image,
            "instance_type": "t1.micro",
            "network": "private",
            "volatile_gib": 1,
            "volumes": [volume_id],
            "project": project.pk,
        },
        format="json",
    )
    assert requested.status_code == 202, requested.json()
    vm_id = requested.json()["id"]
    running = _wait_for(client, vm_id, "running")
    assert volume_id in running["volumes"] and len(running["volumes"]) == 2
    assert _volume_in(client, volume_id, "in-use")["attached_to"] == [vm_id]
    volatile_id = next(v for v in running["volumes"] if v != volume_id)

    assert client.post(f"/api/v1/compute/instances/{vm_id}/detach/", {"volume": volume_id}).status_code == 202
    assert _volume_in(client, volume_id, "available")["attached_to"] == []
    assert client.post(f"/api/v1/compute/instances/{vm_id}/attach/", {"volume": volume_id}).status_code == 202
    assert _volume_in(client, volume_id, "in-use")["attached_to"] == [vm_id]

    assert client.delete(f"/api/v1/compute/instances/{vm_id}/").status_code == 202
    _wait_for(client, vm_id, "terminated")
    assert _volume_in(client, volume_id, "available")["attached_to"] == []
    assert _volume_in(client, volatile_id, "deleted")["state"] == "deleted"
    assert path.exists()  # its data outlives the VM
    assert not Path(Volume.objects.get(uuid=volatile_id).path).exists()
    shutil.rmtree(settings.QUARANTINE_DIR, ignore_errors=True)
