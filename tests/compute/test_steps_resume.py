"""After a worker dies mid-step its message may be gone (the filesystem broker deletes a message when a worker
takes it; Redis gives an unacknowledged one back only after its visibility timeout). A worker that starts
sends again the current step of every instance in a worker state on its hosts; a step that then finds the
instance moved on by another run stops without failing it. (The whole story, with a real worker killed by
SIGKILL: test_worker_killed.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from compute import execution, tasks
from compute.models import InstanceState

pytestmark = pytest.mark.django_db

S = InstanceState


def test_resume_sends_the_current_step_of_each_instance_in_a_worker_state_on_the_hosts_given(
    make_host, types, instance_on, enqueued
):
    h1, h2 = make_host("h1"), make_host("h2")
    made = {state: instance_on(h1, types["t1.micro"], state=state, name=state) for state in S.values}
    elsewhere = instance_on(h2, types["t1.micro"], state=S.PREPARING, name="elsewhere")

    assert execution.steps_resume(host_names=["h1"]) == 5
    assert enqueued == [
        (execution.PREPARE, made[S.SCHEDULED].pk, "host.h1"),
        (execution.PREPARE, made[S.PREPARING].pk, "host.h1"),
        (execution.BOOT, made[S.BOOTING].pk, "host.h1"),
        (execution.SHUTDOWN, made[S.STOPPING].pk, "host.h1"),
        (execution.TERMINATE, made[S.TERMINATING].pk, "host.h1"),
    ]
    assert elsewhere.pk not in [pk for _, pk, _ in enqueued]
    assert execution.steps_resume(host_names=[]) == 0


def test_a_step_that_finds_its_instance_moved_on_by_another_run_leaves_it_as_that_run_left_it(
    make_host, types, instance_on
):
    vm = instance_on(make_host("h1"), types["t1.micro"], state=S.SCHEDULED)
    seen_scheduled = execution._get(vm.pk)
    execution._move(seen_scheduled, allowed=[S.SCHEDULED], to=S.PREPARING, verb="preparing")  # the other run

    def late_prepare(instance_id: int) -> bool:
        execution._move(seen_scheduled, allowed=[S.SCHEDULED], to=S.PREPARING, verb="preparing")
        return True

    task = SimpleNamespace(name=execution.PREPARE, request=SimpleNamespace(retries=0), max_retries=8)
    assert tasks._run_step(task, vm.pk, late_prepare) is None
    vm.refresh_from_db()
    assert (vm.state, vm.state_message) == (S.PREPARING, "")
