"""The VM pages: launch (images the policy allows, the preview of quotas and room, the request), one VM's page
(details, events, console, actions, volumes), actions on several VMs at once, and CPU use sampled from libvirt."""

from __future__ import annotations

import shutil
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.quotas import quota_set
from compute import hypervisor, services, stats
from compute.domain import DiskSpec, DomainSpec, domain_xml
from compute.execution import domain_name
from compute.models import Attachment, Host, Instance
from core.models import AuditEntry
from marketplace.policy import services as policy_services
from marketplace.policy.rules import PolicyRules
from storage import services as storage_services

pytestmark = pytest.mark.django_db


@pytest.fixture
def host(db):
    return Host.objects.create(name="h1", uri="test:///default", vcpus=8, ram_mib=16384)


@pytest.fixture
def launch_world(owner, project, types, networks, image, host, owner_key):
    return {"project": project, "image": image, "host": host, "key": owner_key}


def _launch_body(world, **changes):
    body = {
        "name": "analysis",
        "project": world["project"].pk,
        "image": world["image"].identifier,
        "instance_type": "m1.small",
        "network": "private",
        "volatile_gib": "0",
        "ssh_keys": [str(world["key"].pk)],
        "user_data": "#cloud-config\n",
    }
    return {**body, **changes}


# --- Launch -----------------------------------------------------------------------------------------------------


def test_the_launch_page_offers_the_allowed_image_with_its_reasons(client, owner, launch_world):
    client.force_login(owner)
    page = client.get("/instances/new/").content.decode()
    identifier = launch_world["image"].identifier
    assert f'value="{identifier}"' in page
    assert 'data-verdict="allowed"' in page
    assert "<summary>Why allowed</summary>" in page
    # The preview starts with the first project and the default type.
    assert "vCPU 0 → 1 of" in page
    assert "A host has room" in page


def test_the_launch_page_reads_the_same_number_of_rows_whatever_the_images_offered(
    client, owner, launch_world, entry_for
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from marketplace import services as marketplace_services
    from tests.marketplace.conftest import OTHER_IMAGE

    client.force_login(owner)
    with CaptureQueriesContext(connection) as one:
        client.get("/instances/new/")
    marketplace_services.entry_upload(raw=entry_for("owner", image=OTHER_IMAGE), uploader=owner)
    with CaptureQueriesContext(connection) as two:
        page = client.get("/instances/new/").content.decode()
    assert f'value="{OTHER_IMAGE.identifier}"' in page
    assert len(two) == len(one)  # each image's SHA-256 claim comes with the images, not one query per image


def test_a_denied_image_is_hidden_until_asked_for_then_greyed_with_its_reason(client, owner, launch_world, staff):
    policy_services.policy_change(actor=staff, rules=PolicyRules(mode="enforce", min_endorsements=2))
    client.force_login(owner)
    identifier = launch_world["image"].identifier
    assert f'value="{identifier}"' not in client.get("/instances/new/").content.decode()
    page = client.get("/instances/new/?denied=1").content.decode()
    assert f'<li class="image-choice denied" data-image="{identifier}" data-verdict="denied">' in page
    assert "disabled" in page.split(f'id="image-{identifier}"')[1].split(">")[0]
    assert "Denied:" in page


def test_launching_requests_the_vm_and_goes_to_its_page(
    client, owner, launch_world, enqueued, django_capture_on_commit_callbacks
):
    client.force_login(owner)
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post("/instances/new/", _launch_body(launch_world))
    instance = Instance.objects.get()
    assert answer.status_code == 302
    assert answer["Location"] == f"/instances/{instance.uuid}/"
    assert (instance.name, instance.state, instance.instance_type.name) == ("analysis", "scheduled", "m1.small")
    assert instance.ssh_keys == [launch_world["key"].public_key]
    assert enqueued == [("compute.instance_prepare", instance.pk, "host.h1")]
    page = client.get(answer["Location"]).content.decode()
    assert "VM analysis is requested on host h1" in page
    assert 'id="instance-state">scheduled<' in page


def test_a_denied_image_sent_by_hand_is_refused_with_the_policys_reason(client, owner, staff, launch_world):
    policy_services.policy_change(actor=staff, rules=PolicyRules(mode="enforce", min_endorsements=2))
    client.force_login(owner)
    answer = client.post("/instances/new/", _launch_body(launch_world))
    assert answer.status_code == 400
    page = answer.content.decode()
    assert f"The site policy refuses image {launch_world['image'].identifier}" in page
    assert 'id="launch-errors"' in page
    assert not Instance.objects.exists()


def test_the_image_search_narrows_the_images_offered(client, owner, launch_world):
    client.force_login(owner)
    identifier = launch_world["image"].identifier
    assert f'value="{identifier}"' in client.get("/instances/new/", {"q": launch_world["image"].title}).content.decode()
    page = client.get("/instances/new/", {"q": "no-such-image-anywhere"}).content.decode()
    assert f'value="{identifier}"' not in page
    assert "No machine image matches “no-such-image-anywhere”" in page


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_a_volume_of_another_project_cannot_be_named_in_a_launch(
    client, owner, outsider, staff, launch_world, volume_settings
):
    from accounts.services import project_create

    theirs = project_create(actor=staff, name="theirs", manager=outsider)
    made = storage_services.volume_create(actor=outsider, project=theirs, name="secret", size_gib=1)
    storage_services.volume_provision(volume_id=made.pk)
    client.force_login(owner)
    answer = client.post("/instances/new/", _launch_body(launch_world, volumes=[str(made.uuid)]))
    assert answer.status_code == 400
    assert "Select a valid choice." in answer.content.decode()
    assert not Instance.objects.exists()


def test_a_bad_name_is_shown_on_the_form_and_nothing_is_requested(client, owner, launch_world):
    client.force_login(owner)
    answer = client.post("/instances/new/", _launch_body(launch_world, name="no spaces allowed"))
    assert answer.status_code == 400
    assert "is not a valid instance name" in answer.content.decode()
    assert not Instance.objects.exists()


def test_a_request_over_the_quota_says_which_quota_and_changes_nothing(client, owner, staff, launch_world):
    quota_set(actor=staff, project=launch_world["project"], limits={"vcpus": 0})
    client.force_login(owner)
    answer = client.post("/instances/new/", _launch_body(launch_world))
    assert answer.status_code == 400
    assert "VCPU quota exceeded (quota 0, used 0, requested 1)" in answer.content.decode()
    assert not Instance.objects.exists()


def test_launching_into_a_project_of_someone_else_is_refused(client, outsider, launch_world, networks):
    client.force_login(outsider)
    answer = client.post("/instances/new/", _launch_body(launch_world))
    assert answer.status_code == 400
    assert "Select a valid choice" in answer.content.decode()
    assert not Instance.objects.exists()


def test_another_users_ssh_key_cannot_be_given_to_a_vm(client, member, launch_world):
    client.force_login(member)
    answer = client.post("/instances/new/", _launch_body(launch_world))
    assert answer.status_code == 400
    assert not Instance.objects.exists()


def test_the_preview_shows_each_quota_before_and_after_and_the_room(client, owner, staff, launch_world, instance_on):
    quota_set(actor=staff, project=launch_world["project"], limits={"vcpus": 3})
    instance_on(launch_world["host"], services.InstanceType.objects.get(name="m1.large"), name="big")
    client.force_login(owner)
    page = client.get(
        "/instances/new/preview/",
        {"project": launch_world["project"].pk, "instance_type": "m1.large", "network": "public", "volatile_gib": "5"},
    ).content.decode()
    assert 'data-quota="vCPU">vCPU 2 → 4 of 3 <strong>(over the quota)</strong>' in page
    assert "Instance 1 → 2 of" in page
    assert "Public IP 0 → 1 of" in page
    assert "Volume GiB 0 → 5 of" in page
    # 8 vCPU × 4 overcommit, 16 GiB RAM: m1.large (2 vCPU, 6 GiB) fits twice empty, once beside the one running.
    assert "1 more m1.large VM fit now (of 2)" in page


def test_the_preview_of_a_project_that_is_not_mine_shows_nothing_of_it(client, outsider, launch_world):
    client.force_login(outsider)
    page = client.get(
        "/instances/new/preview/", {"project": launch_world["project"].pk, "instance_type": "m1.small"}
    ).content.decode()
    assert "Choose one of your projects" in page
    assert "vCPU" not in page


def test_the_preview_answers_nonsense_input_calmly(client, owner, launch_world):
    client.force_login(owner)
    for query in (
        {"project": "abc", "instance_type": "m1.small"},
        {"project": "1 OR 1=1", "instance_type": "m1.small"},
        {"project": launch_world["project"].pk, "instance_type": "<script>"},
        {"project": launch_world["project"].pk, "instance_type": "m1.small", "volatile_gib": "-5"},
        {"project": launch_world["project"].pk, "instance_type": "m1.small", "volatile_gib": "9" * 40},
    ):
        answer = client.get("/instances/new/preview/", query)
        assert answer.status_code == 200
        assert "<script>" not in answer.content.decode()


def test_a_volatile_disk_over_the_sites_limit_is_refused_on_the_field(client, owner, launch_world, settings):
    settings.COMPUTE_VOLATILE_MAX_GIB = 10
    client.force_login(owner)
    answer = client.post("/instances/new/", _launch_body(launch_world, volatile_gib="11"))
    assert answer.status_code == 400
    assert "Ensure this value is less than or equal to 10." in answer.content.decode()
    assert not Instance.objects.exists()


# --- One VM -----------------------------------------------------------------------------------------------------


def test_the_vm_page_shows_details_events_and_the_actions_of_its_state(client, owner, launch_world, enqueued):
    client.force_login(owner)
    client.post("/instances/new/", _launch_body(launch_world))
    instance = Instance.objects.get()
    Instance.objects.filter(pk=instance.pk).update(state="running")
    page = client.get(f"/instances/{instance.uuid}/").content.decode()
    assert "<h1>VM analysis</h1>" in page
    assert 'data-action="compute.instance.requested"' in page
    assert "10.10.0.2" in page
    for action in ("shutdown", "reboot", "kill", "terminate"):
        assert f'action="/instances/{instance.uuid}/{action}/"' in page
    assert f'action="/instances/{instance.uuid}/start/"' not in page
    assert 'data-confirm="Terminate VM analysis?' in page


def test_a_vm_of_another_project_is_not_found_on_every_page(client, outsider, owner, launch_world, instance_on):
    vm = instance_on(launch_world["host"], services.InstanceType.objects.get(name="t1.micro"))
    client.force_login(outsider)
    for url in ("", "status/", "console/"):
        assert client.get(f"/instances/{vm.uuid}/{url}").status_code == 404
    for action in ("shutdown", "terminate", "attach", "detach"):
        assert client.post(f"/instances/{vm.uuid}/{action}/").status_code == 404
    assert client.get("/instances/not-a-uuid/").status_code == 404
    vm.refresh_from_db()
    assert vm.state == "running"


def test_an_action_the_state_does_not_allow_is_explained_and_changes_nothing(client, owner, launch_world, instance_on):
    vm = instance_on(launch_world["host"], services.InstanceType.objects.get(name="t1.micro"), state="stopped")
    client.force_login(owner)
    answer = client.post(f"/instances/{vm.uuid}/shutdown/", follow=True)
    assert "VM vm was not changed: instance vm is stopped." in answer.content.decode()
    vm.refresh_from_db()
    assert vm.state == "stopped"


def test_shutdown_from_the_page_moves_the_vm_and_sends_the_step(
    client, owner, launch_world, instance_on, enqueued, django_capture_on_commit_callbacks
):
    vm = instance_on(launch_world["host"], services.InstanceType.objects.get(name="t1.micro"))
    client.force_login(owner)
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(f"/instances/{vm.uuid}/shutdown/", follow=True)
    assert "Shutting down VM vm." in answer.content.decode()
    vm.refresh_from_db()
    assert vm.state == "stopping"
    assert enqueued == [("compute.instance_shutdown", vm.pk, "host.h1")]


def test_the_status_partial_polls_while_the_vm_moves_and_stops_when_it_ended(client, owner, launch_world, instance_on):
    vm = instance_on(launch_world["host"], services.InstanceType.objects.get(name="t1.micro"), state="booting")
    client.force_login(owner)
    part = client.get(f"/instances/{vm.uuid}/status/").content.decode()
    assert 'hx-trigger="every 2s"' in part and 'id="instance-state">booting<' in part
    assert '<div id="instance-events" class="table-scroll" hx-swap-oob="true">' in part
    Instance.objects.filter(pk=vm.pk).update(state="terminated")
    assert "hx-trigger" not in client.get(f"/instances/{vm.uuid}/status/").content.decode()


def test_the_console_says_so_when_the_host_does_not_answer(client, owner, launch_world, instance_on, settings):
    settings.COMPUTE_CONSOLE_TIMEOUT = 1  # no worker runs here: the question waits that long, then gives up
    vm = instance_on(launch_world["host"], services.InstanceType.objects.get(name="t1.micro"))
    client.force_login(owner)
    part = client.get(f"/instances/{vm.uuid}/console/").content.decode()
    assert "The console log cannot be read now: host h1 did not answer within 1 s" in part


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_a_volume_is_attached_and_detached_from_the_vm_page(
    client, owner, launch_world, instance_on, volume_settings, enqueued
):
    vm = instance_on(launch_world["host"], services.InstanceType.objects.get(name="t1.micro"))
    made = storage_services.volume_create(actor=owner, project=launch_world["project"], name="results", size_gib=1)
    volume = storage_services.volume_provision(volume_id=made.pk)
    client.force_login(owner)
    page = client.get(f"/instances/{vm.uuid}/").content.decode()
    assert f'<option value="{volume.uuid}">results (persistent, 1 GiB)</option>' in page
    answer = client.post(f"/instances/{vm.uuid}/attach/", {"volume": str(volume.uuid)}, follow=True)
    assert "Attaching volume results to VM vm." in answer.content.decode()
    attachment = Attachment.objects.get()
    from compute import attachments

    attachments.attach_settle(attachment.pk, ok=True)
    page = client.get(f"/instances/{vm.uuid}/").content.decode()
    assert ">Detach</button>" in page
    answer = client.post(f"/instances/{vm.uuid}/detach/", {"volume": str(volume.uuid)}, follow=True)
    assert "Detaching volume results from VM vm." in answer.content.decode()


def test_a_volume_of_another_project_cannot_be_attached(client, owner, outsider, launch_world, instance_on, staff):
    from accounts.services import project_create

    theirs = project_create(actor=staff, name="theirs", manager=outsider)
    vm = instance_on(launch_world["host"], services.InstanceType.objects.get(name="t1.micro"))
    other = storage_services.volume_create(actor=outsider, project=theirs, name="secret", size_gib=1)
    client.force_login(owner)
    answer = client.post(f"/instances/{vm.uuid}/attach/", {"volume": str(other.uuid)}, follow=True)
    assert "Choose one of your volumes first." in answer.content.decode()
    assert not Attachment.objects.exists()


# --- Several at once --------------------------------------------------------------------------------------------


def test_bulk_shutdown_acts_on_each_vm_and_reports_the_ones_it_could_not(
    client, owner, outsider, staff, launch_world, instance_on, enqueued
):
    micro = services.InstanceType.objects.get(name="t1.micro")
    one = instance_on(launch_world["host"], micro, name="one")
    two = instance_on(launch_world["host"], micro, name="two")
    stopped = instance_on(launch_world["host"], micro, state="stopped", name="resting")
    client.force_login(owner)
    stranger = str(uuid.uuid4())
    answer = client.post(
        "/instances/actions/",
        {"action": "shutdown", "instances": [str(one.uuid), str(two.uuid), str(stopped.uuid), stranger]},
        follow=True,
    )
    page = answer.content.decode()
    assert "Shutting down 2 VMs: one, two." in page
    assert "VM resting was not changed: instance resting is stopped." in page
    assert f"{stranger}: no such VM in your projects." in page
    assert sorted(Instance.objects.values_list("name", "state")) == [
        ("one", "stopping"),
        ("resting", "stopped"),
        ("two", "stopping"),
    ]


def test_bulk_actions_refuse_unknown_actions_and_empty_selections(client, owner, launch_world, instance_on):
    vm = instance_on(launch_world["host"], services.InstanceType.objects.get(name="t1.micro"))
    client.force_login(owner)
    page = client.post("/instances/actions/", {"action": "delete", "instances": [str(vm.uuid)]}, follow=True)
    assert "Select a valid choice. delete is not one of the available choices." in page.content.decode()
    page = client.post("/instances/actions/", {"action": "terminate"}, follow=True)
    assert "Select at least one VM first." in page.content.decode()
    vm.refresh_from_db()
    assert vm.state == "running"


def test_bulk_terminate_ends_vms_that_never_ran_at_once(client, owner, launch_world, instance_on):
    micro = services.InstanceType.objects.get(name="t1.micro")
    waiting = instance_on(launch_world["host"], micro, state="scheduled", name="waiting")
    client.force_login(owner)
    client.post("/instances/actions/", {"action": "terminate", "instances": [str(waiting.uuid)]})
    waiting.refresh_from_db()
    assert waiting.state == "terminated"
    assert AuditEntry.objects.filter(action="compute.instance.terminated", actor=owner).count() == 1


# --- CPU use ----------------------------------------------------------------------------------------------------


def test_cpu_percent_is_cpu_time_over_wall_time_per_vcpu():
    t0 = timezone.now()
    assert stats.cpu_percent(before_ns=0, before_at=t0, now_ns=10**9, now_at=t0 + timedelta(seconds=2), vcpus=1) == 50
    assert (
        stats.cpu_percent(before_ns=0, before_at=t0, now_ns=4 * 10**9, now_at=t0 + timedelta(seconds=2), vcpus=4) == 50
    )
    # A restarted domain's counter starts again; no time passed: no figure rather than a wrong one.
    assert stats.cpu_percent(before_ns=5, before_at=t0, now_ns=1, now_at=t0 + timedelta(seconds=1), vcpus=1) is None
    assert stats.cpu_percent(before_ns=0, before_at=t0, now_ns=1, now_at=t0, vcpus=1) is None


def test_the_worker_samples_cpu_time_from_libvirt_and_the_second_sample_gives_cpu_percent(launch_world, instance_on):
    vm = instance_on(launch_world["host"], services.InstanceType.objects.get(name="t1.micro"))
    spec = DomainSpec(
        name=domain_name(vm),
        uuid=vm.uuid,
        vcpus=1,
        ram_mib=512,
        console_log="/var/log/alto/cpu.log",
        disks=(DiskSpec(target="vda", path="/var/lib/alto/cpu.qcow2"),),
    )
    hypervisor.domain_define("test:///default", domain_xml(spec))
    hypervisor.domain_start("test:///default", domain_name(vm))
    try:
        assert stats.host_cpu_sample(host_id=launch_world["host"].pk) == 1
        vm.refresh_from_db()
        assert vm.cpu_time_ns is not None and vm.cpu_percent is None  # one sample: no rate yet
        assert stats.host_cpu_sample(host_id=launch_world["host"].pk) == 1
        vm.refresh_from_db()
        # The test driver counts CPU time as if the guest never rested: busy, by what libvirt says.
        assert vm.cpu_percent is not None and vm.cpu_percent > 0
        Instance.objects.filter(pk=vm.pk).update(state="stopped")
        stats.host_cpu_sample(host_id=launch_world["host"].pk)
        vm.refresh_from_db()
        assert (vm.cpu_time_ns, vm.cpu_percent) == (None, None)
    finally:
        hypervisor.domain_destroy("test:///default", domain_name(vm))
        hypervisor.domain_undefine("test:///default", domain_name(vm))
