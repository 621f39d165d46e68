"""End to end through the API alone, with a real worker process: request → running, shutdown → stopped,
start → running, terminate → terminated (lease freed, root disk in quarantine).

The worker opens the libvirt test driver host ``test:///<file>`` itself (the test driver's state is per
process), downloads the image from a ``file:`` location in its allowed directory, makes the disks with the
real qemu-img and builds the seed ISO. The test only asks the API (and the database) what happened."""

from __future__ import annotations

import shutil
import time
import uuid

import pytest
from django.conf import settings

from compute.models import Host, Lease
from tests.compute.test_hypervisor import NODE

pytestmark = [
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
]

DEADLINE_SECONDS = 90


@pytest.fixture
def worker_host(tmp_path):
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    return Host.objects.create(name=f"e2e-{uuid.uuid4().hex[:8]}", uri=f"test://{node}", vcpus=4, ram_mib=8192)


def _wait_for(client, vm_id: str, state: str) -> dict:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        shown = client.get(f"/api/v1/compute/instances/{vm_id}/").json()
        if shown["state"] in (state, "error") or time.monotonic() > deadline:
            log = (settings.VAR_DIR / "test-worker.log").read_text()[-4000:]
            assert shown["state"] == state, f"{shown}\n--- worker log ---\n{log}"
            return shown
        time.sleep(0.3)


def test_an_instance_runs_stops_starts_and_terminates_through_the_api(
    celery_worker_process, api_as, owner, project, types, networks, owner_key, served_image, worker_host
):
    client = api_as(owner)
    body = {
        "name": "e2e",
        "image": served_image,
        "instance_type": "t1.micro",
        "network": "private",
        "ssh_keys": [owner_key.pk],
        "user_data": "#cloud-config\n",
        "volatile_gib": 1,
        "project": project.pk,
    }
    requested = client.post("/api/v1/compute/instances/", body, format="json")
    assert requested.status_code == 202, requested.json()
    vm_id = requested.json()["id"]
    assert requested.json()["host"] == worker_host.name
    running = _wait_for(client, vm_id, "running")
    assert running["ip"] == "10.10.0.2"

    assert client.post(f"/api/v1/compute/instances/{vm_id}/shutdown/").status_code == 202
    _wait_for(client, vm_id, "stopped")
    assert client.post(f"/api/v1/compute/instances/{vm_id}/start/").status_code == 202
    _wait_for(client, vm_id, "running")

    assert client.delete(f"/api/v1/compute/instances/{vm_id}/").status_code == 202
    ended = _wait_for(client, vm_id, "terminated")
    assert ended["ip"] is None
    assert not Lease.objects.filter(instance__uuid=vm_id).exists()
    quarantined = settings.QUARANTINE_DIR / f"{vm_id}.qcow2"
    assert quarantined.exists()
    assert not (settings.INSTANCE_DIR / vm_id).exists()
    quarantined.unlink()
