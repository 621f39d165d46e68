"""The volume page's attach and detach (compute's actions on storage's page)."""

from __future__ import annotations

import shutil

import pytest

from compute import attachments
from compute.models import Attachment, Host
from storage import services as storage_services

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
]


@pytest.fixture
def page_world(owner, project, types, instance_on, volume_settings):
    host = Host.objects.create(name="h1", uri="test:///default", vcpus=8, ram_mib=16384)
    made = storage_services.volume_create(actor=owner, project=project, name="results", size_gib=1)
    return {
        "running": instance_on(host, types["t1.micro"], state="running", name="analysis"),
        "booting": instance_on(host, types["t1.micro"], state="booting", name="starting"),
        "volume": storage_services.volume_provision(volume_id=made.pk),
    }


def test_the_volume_page_offers_the_running_vms_of_its_project_and_attaches(client, owner, page_world, enqueued):
    client.force_login(owner)
    volume, vm = page_world["volume"], page_world["running"]
    page = client.get(f"/storage/volumes/{volume.uuid}/").content.decode()
    assert f'<option value="{vm.uuid}">analysis (running)</option>' in page
    assert "starting" not in page  # a VM in a step takes no volume
    answer = client.post(f"/storage/volumes/{volume.uuid}/attach/", {"instance": str(vm.uuid)}, follow=True)
    assert answer.redirect_chain[-1][0] == f"/storage/volumes/{volume.uuid}/"
    assert "Attaching volume results to VM analysis." in answer.content.decode()
    volume.refresh_from_db()
    assert volume.state == "attaching"
    assert Attachment.objects.get().instance == vm


def test_a_volume_in_use_shows_its_vm_with_a_detach_button(client, owner, page_world):
    volume, vm = page_world["volume"], page_world["running"]
    attachment = attachments.instance_attach(actor=owner, instance=vm, volume_id=str(volume.uuid))
    attachments.attach_settle(attachment.pk, ok=True)
    client.force_login(owner)
    page = client.get(f"/storage/volumes/{volume.uuid}/").content.decode()
    assert f'<a href="/instances/{vm.uuid}/"><code>analysis</code></a> (running)' in page and ">Detach</button>" in page
    assert 'id="attach-instance"' not in page  # a persistent volume is in one VM at a time
    answer = client.post(f"/storage/volumes/{volume.uuid}/detach/", {"instance": str(vm.uuid)}, follow=True)
    assert "Detaching volume results from VM analysis." in answer.content.decode()
    volume.refresh_from_db()
    assert volume.state == "detaching"


def test_a_refused_attach_is_shown_as_an_error_and_changes_nothing(client, owner, page_world):
    volume, vm = page_world["volume"], page_world["booting"]
    client.force_login(owner)
    answer = client.post(f"/storage/volumes/{volume.uuid}/attach/", {"instance": str(vm.uuid)}, follow=True)
    assert "instance starting is booting" in answer.content.decode()
    volume.refresh_from_db()
    assert volume.state == "available"


@pytest.mark.parametrize("role", ["outsider", "staff"])
def test_someone_outside_the_project_gets_404_for_the_page_and_the_actions(client, page_world, role, request):
    client.force_login(request.getfixturevalue(role))
    volume, vm = page_world["volume"], page_world["running"]
    assert client.get(f"/storage/volumes/{volume.uuid}/").status_code == 404
    for action in ("attach", "detach"):
        assert client.post(f"/storage/volumes/{volume.uuid}/{action}/", {"instance": str(vm.uuid)}).status_code == 404
    assert not Attachment.objects.exists()


def test_the_actions_take_only_post_and_a_signed_in_user(client, owner, page_world):
    volume = page_world["volume"]
    assert client.post(f"/storage/volumes/{volume.uuid}/attach/").status_code == 302  # to the login page
    client.force_login(owner)
    assert client.get(f"/storage/volumes/{volume.uuid}/attach/").status_code == 405
