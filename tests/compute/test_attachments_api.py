"""The attach and detach actions of the compute API: who may call them (permission matrix), 409 and 404 answers,
the instance's ``volumes``, and the OpenAPI schema."""

from __future__ import annotations

import shutil

import pytest

from accounts.services import project_create
from compute import attachments, hypervisor
from compute.domain import DiskSpec, DomainSpec, domain_xml
from compute.models import Attachment, Host
from storage import services as storage_services
from storage.models import Volume
from tests.compute.test_hypervisor import NODE

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
]


@pytest.fixture
def world(owner, member, outsider, staff, project, types, instance_on, volume_settings, tmp_path):
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    host = Host.objects.create(name="h1", uri=f"test://{node}", vcpus=4, ram_mib=8192)
    vm = instance_on(host, types["t1.micro"], state="running")
    name = f"alto-{vm.uuid}"
    disks = (DiskSpec(target="vda", path="/var/lib/alto/root.qcow2"),)
    spec = DomainSpec(name=name, uuid=vm.uuid, vcpus=1, ram_mib=512, console_log="/var/log/c.log", disks=disks)
    hypervisor.domain_define(host.uri, domain_xml(spec))
    hypervisor.domain_start(host.uri, name)

    def volume(name: str, *, actor=owner, in_project=project) -> Volume:
        made = storage_services.volume_create(actor=actor, project=in_project, name=name, size_gib=1)
        return storage_services.volume_provision(volume_id=made.pk)

    free, held = volume("free"), volume("held")
    attachment = attachments.instance_attach(actor=owner, instance=vm, volume_id=str(held.uuid))
    attachments.volume_attach_apply(attachment.pk)
    elsewhere = project_create(actor=staff, name="elsewhere", manager=outsider)
    yield {
        "users": {"owner": owner, "member": member, "outsider": outsider, "staff": staff},
        "vm": vm,
        "free": free,
        "held": held,
        "theirs": volume("theirs", actor=outsider, in_project=elsewhere),
    }
    hypervisor.disconnect_all()


def _post(api, world, role, action, volume, *, vm=None):
    if role != "anonymous":
        api.force_authenticate(user=world["users"][role])
    body = {"volume": str(volume.uuid) if isinstance(volume, Volume) else volume}
    return api.post(f"/api/v1/compute/instances/{vm or world['vm'].uuid}/{action}/", body, format="json")


MATRIX = [
    # action, the volume, {role: status}: only members of the instance's project act on it; others get the
    # answer a missing instance gets.
    ("attach", "free", {"anonymous": 401, "outsider": 404, "staff": 404, "member": 202, "owner": 202}),
    ("detach", "held", {"anonymous": 401, "outsider": 404, "staff": 404, "member": 202, "owner": 202}),
]
CASES = [(a, v, r, s) for a, v, expected in MATRIX for r, s in expected.items()]


@pytest.mark.parametrize(("action", "volume", "role", "expected"), CASES)
def test_permission_matrix(api, world, enqueued, action, volume, role, expected, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        answer = _post(api, world, role, action, world[volume])
    assert answer.status_code == expected, answer.content
    if expected == 202:
        assert answer.json()["id"] == str(world["vm"].uuid)
        assert enqueued[-1][0] == (attachments.ATTACH if action == "attach" else attachments.DETACH)
    else:
        assert Attachment.objects.count() == 1  # nothing changed


def test_attach_answers_202_with_the_volume_among_the_instances_volumes(api, world):
    answer = _post(api, world, "owner", "attach", world["free"])
    assert answer.status_code == 202
    assert sorted(answer.json()["volumes"]) == sorted([str(world["held"].uuid), str(world["free"].uuid)])
    world["free"].refresh_from_db()
    assert world["free"].state == "attaching"


def test_a_volume_that_is_not_available_is_409_and_changes_nothing(api, world, types, instance_on):
    other = instance_on(world["vm"].host, types["t1.micro"], state="running", name="other")
    answer = _post(api, world, "owner", "attach", world["held"], vm=other.uuid)
    assert answer.status_code == 409
    assert answer.json()["code"] == "volume-unavailable"
    assert not Attachment.objects.filter(instance=other).exists()
    answer = _post(api, world, "owner", "detach", world["free"])
    assert (answer.status_code, answer.json()["code"]) == (409, "volume-not-attached")


def test_another_projects_volume_gets_the_answer_of_a_missing_one(api, world):
    theirs = _post(api, world, "owner", "attach", world["theirs"])
    missing = _post(api, world, "owner", "attach", "0b0e6f58-5bd1-4b0e-9d51-0d4c0b2b8f11")
    malformed = _post(api, world, "owner", "attach", "../../etc/passwd")
    assert theirs.status_code == missing.status_code == malformed.status_code == 404
    assert theirs.json() == missing.json() == malformed.json()
    world["theirs"].refresh_from_db()
    assert world["theirs"].state == "available"


def test_a_body_without_a_volume_is_a_clear_400(api, world):
    api.force_authenticate(user=world["users"]["owner"])
    answer = api.post(f"/api/v1/compute/instances/{world['vm'].uuid}/attach/", {}, format="json")
    assert answer.status_code == 400
    assert "volume" in str(answer.json())


def test_a_stopping_instance_is_409_naming_its_state(api, world):
    type(world["vm"]).objects.filter(pk=world["vm"].pk).update(state="stopping")
    answer = _post(api, world, "owner", "attach", world["free"])
    assert (answer.status_code, answer.json()["code"]) == (409, "instance-state")
    assert "stopping" in answer.json()["detail"]


def test_the_schema_documents_attach_and_detach_with_their_body(api):
    schema = api.get("/api/v1/schema/", {"format": "json"}).json()
    for action in ("attach", "detach"):
        operation = schema["paths"][f"/api/v1/compute/instances/{{instance_id}}/{action}/"]["post"]
        assert "202" in operation["responses"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert schema["components"]["schemas"][body]["required"] == ["volume"]
