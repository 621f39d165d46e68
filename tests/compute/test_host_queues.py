"""Scale-out as DESIGN §4 has it: one worker per hypervisor host, each consuming only its host's queue
``host.<name>`` (one of them also ``default``). Requests placed on host a run on worker a, those on host b on
worker b: every step an instance went through is recorded in the audit with the worker that ran it.

Two worker processes share one broker only in the production configuration (Redis); the embedded
configuration runs a single worker (RUNBOOK.md), so this test is skipped there."""

from __future__ import annotations

import shutil
import time
import uuid

import pytest
from django.conf import settings

from compute.models import Host, Instance
from core.models import AuditEntry
from marketplace.models import Image
from tests.compute.test_hypervisor import NODE

pytestmark = [
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.CELERY_BROKER_URL.startswith("redis"),
        reason="two worker processes need a shared broker: run with CELERY_BROKER_URL=redis://… (make test does)",
    ),
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
]

DEADLINE_SECONDS = 120
STEPS = ("compute.instance.preparing", "compute.instance.booting", "compute.instance.running")


def test_each_hosts_instances_run_on_the_worker_of_that_hosts_queue(
    celery_workers, networks, micro_request, served_image, tmp_path
):
    hosts = {}
    for label in ("a", "b"):
        node = tmp_path / f"{label}.xml"
        node.write_text(NODE)
        hosts[label] = Host.objects.create(
            name=f"c10f-{label}-{uuid.uuid4().hex[:8]}", uri=f"test://{node}", vcpus=4, ram_mib=8192
        )
    workers = {
        "a": celery_workers("c10f-worker-a", queues=f"default,host.{hosts['a'].name}"),
        "b": celery_workers("c10f-worker-b", queues=f"host.{hosts['b'].name}"),
    }
    image = Image.objects.get(identifier=served_image)
    # Spread placement alternates between the two equal hosts.
    vms = [micro_request(f"vm{number}", image=image) for number in range(4)]
    assert sorted(vm.host.name for vm in vms) == sorted([hosts["a"].name] * 2 + [hosts["b"].name] * 2)

    deadline = time.monotonic() + DEADLINE_SECONDS
    while Instance.objects.filter(pk__in=[vm.pk for vm in vms], state__in=["running", "error"]).count() < len(vms):
        assert time.monotonic() < deadline, "\n".join(
            [str(list(Instance.objects.values_list("name", "state", "state_message")))]
            + [f"--- {label} ---\n{worker.log_text()[-2000:]}" for label, worker in workers.items()]
        )
        time.sleep(0.3)

    for vm in vms:
        vm.refresh_from_db()
        assert vm.state == "running", vm.state_message
        label = "a" if vm.host_id == hosts["a"].pk else "b"
        ran_by = dict(
            AuditEntry.objects.filter(object_id=str(vm.pk), action__in=STEPS).values_list("action", "details__worker")
        )
        assert set(ran_by) == set(STEPS)
        assert {who.split("@")[0] for who in ran_by.values()} == {f"c10f-worker-{label}"}, (vm.name, ran_by)
