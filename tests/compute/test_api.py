"""The compute API: who may call what (permission matrix), what the lists show, and how many queries
they take."""

from __future__ import annotations

import pytest

from compute.models import Host, Instance, Network
from compute.services import instance_request
from storage.models import Volume

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "outsider", "member", "owner", "staff"]


@pytest.fixture
def world(owner, member, outsider, staff, project, image, types, networks, make_host, owner_key):
    make_host("h1", vcpus=8, ram_mib=16384)
    vm = instance_request(
        actor=owner,
        project=project,
        image=image,
        instance_type=types["m1.small"],
        network="public",
        ssh_keys=[owner_key.pk],
        name="vm1",
    )
    return {"users": {"owner": owner, "member": member, "outsider": outsider, "staff": staff}, "vm": vm}


def client_for(api, world, role):
    if role != "anonymous":
        api.force_authenticate(user=world["users"][role])
    return api


def url(template, world):
    return template.format(vm=world["vm"].uuid)


MATRIX = [
    # method, url, {role: status}
    ("get", "/api/v1/compute/instance-types/", {"anonymous": 401, "outsider": 200, "member": 200, "staff": 200}),
    ("get", "/api/v1/compute/capacity/", {"anonymous": 401, "outsider": 200, "owner": 200, "staff": 200}),
    ("get", "/api/v1/compute/instances/", {"anonymous": 401, "outsider": 200, "member": 200, "owner": 200}),
    (
        "get",
        "/api/v1/compute/instances/{vm}/",
        {"anonymous": 401, "outsider": 404, "member": 200, "owner": 200, "staff": 404},
    ),
    ("get", "/api/v1/compute/instances/not-a-uuid/", {"owner": 404}),
    ("post", "/api/v1/compute/instances/", {"anonymous": 401}),
    # A fresh scheduled instance: members may terminate it; the other actions find it in no state for them.
    (
        "delete",
        "/api/v1/compute/instances/{vm}/",
        {"anonymous": 401, "outsider": 404, "staff": 404, "member": 202},
    ),
    ("delete", "/api/v1/compute/instances/{vm}/", {"owner": 202}),
    *[
        (
            "post",
            f"/api/v1/compute/instances/{{vm}}/{action}/",
            {"anonymous": 401, "outsider": 404, "staff": 404, "member": 409, "owner": 409},
        )
        for action in ("start", "shutdown", "kill", "reboot")
    ],
    ("get", "/api/v1/admin/hosts/", {"anonymous": 401, "outsider": 403, "owner": 403, "staff": 200}),
    ("post", "/api/v1/admin/hosts/", {"anonymous": 401, "member": 403, "owner": 403}),
    ("get", "/api/v1/admin/networks/", {"anonymous": 401, "outsider": 403, "owner": 403, "staff": 200}),
    ("post", "/api/v1/admin/networks/", {"anonymous": 401, "member": 403, "owner": 403}),
]
CASES = [(m, u, r, s) for m, u, expected in MATRIX for r, s in expected.items()]


@pytest.mark.parametrize(("method", "path", "role", "expected"), CASES)
def test_permission_matrix(api, world, method, path, role, expected):
    response = getattr(client_for(api, world, role), method)(url(path, world), {}, format="json")
    assert response.status_code == expected, response.content
    if expected >= 400:
        assert set(response.json()) >= {"detail", "code"}


def test_instances_list_shows_only_the_actors_projects_and_the_design_fields(api_as, world, outsider, member):
    assert api_as(outsider).get("/api/v1/compute/instances/").json()["results"] == []
    (row,) = api_as(member).get("/api/v1/compute/instances/").json()["results"]
    assert row["id"] == str(world["vm"].uuid) and row["state"] == "scheduled"
    assert row["image"] == world["vm"].image_identifier and row["instance_type"] == "m1.small"
    assert row["host"] == "h1" and row["network"] == "public" and row["ip"] == "203.0.113.2"
    assert row["volumes"] == [] and row["project"] == world["vm"].project_id
    assert {"state_message", "created", "mac", "policy_warnings"} <= set(row)


def test_instances_list_takes_a_fixed_number_of_queries(
    api_as, world, owner, project, image, types, owner_key, django_assert_max_num_queries
):
    client = api_as(owner)
    # session, page, count, attachments + port translations + firewall rules (a public VM's ways in)
    with django_assert_max_num_queries(5) as few:
        client.get("/api/v1/compute/instances/")
    for n in range(2, 7):
        instance_request(
            actor=owner,
            project=project,
            image=image,
            instance_type=types["t1.micro"],
            network="private",
            ssh_keys=[],
            name=f"vm{n}",
        )
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert len(client.get("/api/v1/compute/instances/").json()["results"]) == 6


def test_capacity_answers_room_per_type(api_as, world, outsider):
    rows = {r["instance_type"]: r for r in api_as(outsider).get("/api/v1/compute/capacity/").json()}
    assert rows["m1.small"]["fits_when_empty"] == 10  # 16384 MiB / 1536 on the one 8-core host
    assert rows["m1.small"]["fits_now"] == 9


def test_staff_list_hosts_and_networks_in_few_queries(api_as, world, staff, make_host, django_assert_max_num_queries):
    make_host("h2")
    client = api_as(staff)
    with django_assert_max_num_queries(3):
        hosts = client.get("/api/v1/admin/hosts/").json()["results"]
    assert [(h["name"], h["live_instances"]) for h in hosts] == [("h1", 1), ("h2", 0)]
    with django_assert_max_num_queries(3):
        nets = {n["kind"]: n for n in client.get("/api/v1/admin/networks/").json()["results"]}
    assert (nets["public"]["leases_total"], nets["public"]["leases_held"]) == (13, 1)


def test_staff_add_a_host_by_uri_with_the_capacity_libvirt_reports(api_as, staff, tmp_path):
    node = tmp_path / "node.xml"
    node.write_text(
        "<node><cpu><mhz>2000</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets><cores>12</cores>"
        "<threads>1</threads><active>12</active></cpu><memory>25165824</memory></node>"
    )
    response = api_as(staff).post("/api/v1/admin/hosts/", {"name": "h9", "uri": f"test://{node}"}, format="json")
    assert response.status_code == 201, response.json()
    assert (response.json()["vcpus"], response.json()["ram_mib"], response.json()["state"]) == (12, 24576, "up")
    assert Host.objects.filter(name="h9").exists()


def test_staff_add_a_network_and_bad_input_is_a_clear_400(api_as, staff):
    client = api_as(staff)
    body = {"name": "lab", "kind": "local", "cidr": "192.168.50.0/29", "gateway": "192.168.50.1", "bridge": "br-lab"}
    response = client.post("/api/v1/admin/networks/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["leases_total"] == 5
    bad = client.post(
        "/api/v1/admin/networks/", {**body, "kind": "private", "name": "x", "gateway": "10.0.0.1"}, format="json"
    )
    assert bad.status_code == 400 and bad.json()["code"] == "network-gateway"
    assert Network.objects.count() == 1


@pytest.fixture
def body(world, project, image, owner_key):
    return {
        "name": "vm2",
        "image": image.identifier,
        "instance_type": "t1.micro",
        "network": "private",
        "ssh_keys": [owner_key.pk],
        "user_data": "#cloud-config\n",
        "volatile_gib": 1,
        "project": project.pk,
    }


@pytest.mark.parametrize("role", ["owner", "member", "outsider", "staff"])
def test_request_an_instance(api_as, world, body, role, enqueued, django_capture_on_commit_callbacks):
    if role == "member":
        body["ssh_keys"] = []  # the owner's key is not the member's
    with django_capture_on_commit_callbacks(execute=True):
        response = api_as(world["users"][role]).post("/api/v1/compute/instances/", body, format="json")
    if role in ("outsider", "staff"):
        assert response.status_code == 404 and response.json()["code"] == "not_found"
        return
    assert response.status_code == 202, response.json()
    made = response.json()
    assert (made["name"], made["state"], made["instance_type"], made["volatile_gib"]) == (
        "vm2",
        "scheduled",
        "t1.micro",
        1,
    )
    assert made["ip"] and made["host"] == "h1"
    assert made == api_as(world["users"][role]).get(f"/api/v1/compute/instances/{made['id']}/").json()
    vm = Instance.objects.get(uuid=made["id"])
    volatile = Volume.objects.get(kind="volatile")  # its volatile disk is a storage volume, held by the instance
    assert made["volumes"] == [str(volatile.uuid)]
    assert enqueued == [
        ("storage.volume_create", volatile.pk, "default"),
        ("compute.instance_prepare", vm.pk, "host.h1"),
    ]


def test_request_is_idempotent_and_refuses_bad_input(api_as, world, body, owner):
    client = api_as(owner)
    first = client.post("/api/v1/compute/instances/", body, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    again = client.post("/api/v1/compute/instances/", body, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    assert Instance.objects.filter(name="vm2").count() == 1
    for change, code in [
        ({"instance_type": "huge"}, "instance-type"),
        ({"image": "A" * 27}, "image-unknown"),
        ({"network": "moon"}, "invalid_choice"),
        ({"name": "-bad-"}, "instance-name"),
    ]:
        bad = client.post(
            "/api/v1/compute/instances/", {**body, **change, "name": change.get("name", "x")}, format="json"
        )
        assert bad.status_code == 400 and bad.json()["code"] == code, bad.json()


def test_a_denied_image_is_403_with_the_failed_rules(api_as, world, body, owner, staff):
    from marketplace.policy import PolicyRules
    from marketplace.policy.services import policy_change

    policy_change(actor=staff, rules=PolicyRules(min_endorsements=2))
    response = api_as(owner).post("/api/v1/compute/instances/", body, format="json")
    assert response.status_code == 403 and response.json()["code"] == "policy-denied"
    assert response.json()["rules"] and all("rule" in r for r in response.json()["rules"])


def test_actions_answer_202_or_409_with_the_state_found(api_as, world, owner, enqueued):
    vm = world["vm"]
    client = api_as(owner)
    refused = client.post(f"/api/v1/compute/instances/{vm.uuid}/shutdown/")
    assert refused.status_code == 409 and "scheduled" in refused.json()["detail"]
    Instance.objects.filter(pk=vm.pk).update(state="running")
    assert client.post(f"/api/v1/compute/instances/{vm.uuid}/reboot/").status_code == 202
    response = client.post(f"/api/v1/compute/instances/{vm.uuid}/shutdown/")
    assert response.status_code == 202 and response.json()["state"] == "stopping"
    Instance.objects.filter(pk=vm.pk).update(state="stopped")
    assert client.post(f"/api/v1/compute/instances/{vm.uuid}/start/").json()["state"] == "booting"
    assert client.post(f"/api/v1/compute/instances/{vm.uuid}/kill/").json()["state"] == "stopping"
    gone = client.delete(f"/api/v1/compute/instances/{vm.uuid}/")
    assert gone.status_code == 202 and gone.json()["state"] == "terminating"
